"""A real browser in the Airflow UI: log in, find the DAG, fill its trigger form, trigger a run.

Debian's Chromium (/usr/bin/chromium; `make browser` installs it) driven by Playwright, against
`airflow standalone` on a free port with a SQLite metadata DB. The DAG stays paused, so the run
the form creates waits in the queue and no stage runs. Screenshots go to the test's
reports/ui/; docs/airflow.md has the manual command that copies a set into the repository.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.airflow_harness import DAG_ID, AirflowServer, airflow_standalone, make_project
from tests.browser import UI_TIMEOUT_MS, chromium_page
from tests.conftest import tiny_pairs, write_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowServer]:
    scratch = tmp_path_factory.mktemp("ui")
    corpus = write_corpus(scratch / "corpus", {"train": tiny_pairs(20)})
    project = make_project(scratch / "project", corpus, {"orchestration": {"schedule": "none"}})
    db_url = f"sqlite:///{scratch / 'airflow.db'}"
    with airflow_standalone(scratch / "airflow_home", project, db_url) as running:
        running.wait_for_dag()
        yield running


@pytest.fixture
def page(server: AirflowServer) -> Iterator[Any]:
    with chromium_page() as tab:
        yield tab


def test_trigger_a_run_with_params_from_the_ui(
    server: AirflowServer, page: Any, tmp_path: Path
) -> None:
    shots = tmp_path / "reports" / "ui"
    shots.mkdir(parents=True)

    log_in(page, server)
    page.screenshot(path=shots / "01-dags.png")
    open_dag_from_search(page)
    page.screenshot(path=shots / "02-dag.png")

    page.get_by_test_id("trigger-dag-button").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    dialog.get_by_label("Epochs").fill("1")
    choose(dialog, "Promotion policy", "manual")
    # The UI labels text fields without a `for`: find them by the field name it gives them.
    dialog.locator("input[name=element_data_path]").fill("/srv/corpora/new")
    page.screenshot(path=shots / "03-trigger-form.png", full_page=True)
    dialog.get_by_test_id("trigger-dag-submit").click()
    dialog.wait_for(state="hidden")
    page.screenshot(path=shots / "04-triggered.png")

    runs = server.api("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
    assert len(runs) == 1
    conf = runs[0]["conf"]
    assert (conf["epochs"], conf["promotion_policy"], conf["data_path"]) == (
        1,
        "manual",
        "/srv/corpora/new",
    )
    assert conf["data_source"] == "params.yaml"
    assert runs[0]["run_type"] == "manual"
    assert sorted(p.name for p in shots.iterdir()) == [
        "01-dags.png",
        "02-dag.png",
        "03-trigger-form.png",
        "04-triggered.png",
    ]


def log_in(page: Any, server: AirflowServer) -> None:
    page.goto(f"{server.base_url}/")
    page.locator("input[name=username]").fill(server.username)
    page.locator("input[name=password]").fill(server.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"))
    page.goto(f"{server.base_url}/dags")
    page.get_by_role("link", name=DAG_ID).first.wait_for()


def open_dag_from_search(page: Any) -> None:
    """The DAG list's search box narrows the list to our DAG; its link opens the DAG page."""
    page.get_by_test_id("search-dags").fill("retrain")
    page.get_by_role("link", name=DAG_ID).first.click()
    page.wait_for_url(re.compile(f"/dags/{DAG_ID}"))
    # The list (one trigger button per DAG) may still be on screen for a moment after the URL
    # changed: the DAG's own page has exactly one.
    expect(page.get_by_test_id("trigger-dag-button")).to_have_count(1, timeout=UI_TIMEOUT_MS)


def choose(dialog: Any, label: str, option: str) -> None:
    """Pick `option` in the form's select field `label` (a combobox)."""
    dialog.get_by_label(label).click()
    dialog.page.get_by_role("option", name=option, exact=True).click()
