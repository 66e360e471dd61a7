from pathlib import Path

import pytest

from pipeline.atomic import atomic_directory, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "first\n")
    atomic_write_text(target, "second\n")
    assert target.read_text(encoding="utf-8") == "second\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_json_is_sorted_and_stable(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    atomic_write_json(target, {"b": 1, "a": "ü"})
    assert target.read_text(encoding="utf-8") == '{\n  "a": "ü",\n  "b": 1\n}\n'


def test_failed_directory_write_keeps_the_old_outputs(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "a.txt").write_text("half", encoding="utf-8")
        raise RuntimeError("boom")
    assert (target / "a.txt").read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_successful_directory_write_swaps_in_new_contents(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_directory(target) as staging:
        (staging / "old.txt").write_text("1", encoding="utf-8")
    with atomic_directory(target) as staging:
        (staging / "new.txt").write_text("2", encoding="utf-8")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_outputs_get_ordinary_permissions(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
        with atomic_directory(tmp_path / "d") as staging:
            (staging / "g.txt").write_text("y", encoding="utf-8")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
