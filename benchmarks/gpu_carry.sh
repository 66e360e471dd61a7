#!/usr/bin/env bash
# Build .gpu-carry/ for the lent GPU machine and print the `run` call that trains the GPU preset
# there (benchmarks/gpu_check.py; docs/training.md, "GPU preset").
#
# That machine has Python 3.12, JAX with CUDA, numpy, sentencepiece, sacrebleu, PyYAML, tqdm,
# h5py, ml-dtypes, rich, absl-py and packaging, but no Keras and no TensorFlow, and it reaches no
# package registry. So .gpu-carry/ (git-ignored, never committed) holds:
#   wheels/    what Keras needs that the machine lacks, for CPython 3.12 on x86-64 Linux, at the
#              versions requirements.lock pins;
#   multi30k/  the en/de files of train, val and test_2016_flickr, copied from $MT_DATA_DIR.
# On the machine the wheels go into a folder on PYTHONPATH (its python3 is itself a venv, so a
# --system-site-packages venv made from it would not see its JAX), offline, before the check runs.
#
#   bash benchmarks/gpu_carry.sh        # then make the printed `run` call
set -euo pipefail
cd "$(dirname "$0")/.."

CARRY=.gpu-carry
PYTHON_VERSION=3.12
# What Keras 3 needs beyond the machine's packages; tzdata because params.yaml names time zones
# and a bare image may have no /usr/share/zoneinfo.
CARRIED=(keras namex optree tzdata)
# Everything the carried wheels may pull in must be on the machine already (KINDS.md's list).
ON_MACHINE=(absl-py numpy rich h5py ml-dtypes packaging typing-extensions
  markdown-it-py mdurl pygments)
LIMIT_BYTES=$((64 * 1024 * 1024))
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64)
DATA_DIR=${MT_DATA_DIR:-../shared/data/multi30k}
FILES=(train.en.gz train.de.gz val.en.gz val.de.gz test_2016_flickr.en.gz test_2016_flickr.de.gz)
PIP=(.venv/bin/python -m pip)
# This machine's pip config names a local index folder that may not exist: drop that noise only.
quiet_pip() { "${PIP[@]}" "$@" 2> >(grep -v "is neither a file nor a directory" >&2); }

fail() { echo "gpu_carry: $*" >&2; exit 1; }

pinned() {  # NAME -> NAME==VERSION as requirements.lock pins it
  local line
  line=$(grep -E "^$1==" requirements.lock) ||
    fail "requirements.lock pins no $1; run make install"
  echo "$line"
}

PINS=()
for name in "${CARRIED[@]}"; do PINS+=("$(pinned "$name")"); done

for file in "${FILES[@]}"; do
  [ -f "$DATA_DIR/$file" ] ||
    fail "$DATA_DIR/$file: missing; set MT_DATA_DIR to the Multi30k folder"
done

# Everything the carried packages need must be carried or already on the machine.
# (--target only because pip wants one with --python-version; a dry run writes nothing.)
report=$(quiet_pip install --dry-run --ignore-installed --quiet --report - \
  --target "$CARRY.dry-run" --only-binary=:all: --python-version "$PYTHON_VERSION" \
  --implementation cp "${PLATFORMS[@]}" "${PINS[@]}") ||
  fail "pip cannot resolve ${PINS[*]} for CPython $PYTHON_VERSION (its error is above)"
needed=$(.venv/bin/python -c 'import json, re, sys
names = (i["metadata"]["name"] for i in json.loads(sys.argv[1])["install"])
print(" ".join(re.sub(r"[-_.]+", "-", name).lower() for name in names))' "$report")
for name in $needed; do
  case " ${CARRIED[*]} ${ON_MACHINE[*]} " in
    *" $name "*) ;;
    *) fail "Keras for Python $PYTHON_VERSION also needs $name: carry it, or check that the" \
      "machine has it and add it to ON_MACHINE" ;;
  esac
done

rm -rf "$CARRY"
mkdir -p "$CARRY/wheels" "$CARRY/multi30k"
quiet_pip download --quiet --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
  --implementation cp "${PLATFORMS[@]}" -d "$CARRY/wheels" "${PINS[@]}"
for file in "${FILES[@]}"; do cp "$DATA_DIR/$file" "$CARRY/multi30k/"; done

# The working tree travels with the carried folder; together they must stay under the limit.
carried=$(du -sb "$CARRY" | cut -f1)
tree=$(git ls-files -z --cached --others --exclude-standard | .venv/bin/python -c 'import os, sys
print(sum(os.path.getsize(p) for p in sys.stdin.read().split("\0") if os.path.isfile(p)))')
total=$((carried + tree))
[ "$total" -lt "$LIMIT_BYTES" ] ||
  fail "$CARRY ($carried bytes) + the working tree ($tree bytes) exceed 64 MiB"

COMMAND='set -o pipefail; python3 -m pip install -q --no-index --no-deps --no-compile'
COMMAND+=' --no-cache-dir --upgrade --target /tmp/site .gpu-carry/wheels/*.whl || exit 1;'
COMMAND+=' export PYTHONPATH=/tmp/site KERAS_BACKEND=jax PYTHONUNBUFFERED=1; nvidia-smi -L;'
COMMAND+=' python3 benchmarks/gpu_check.py --data-dir .gpu-carry/multi30k'
COMMAND+=' --output $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log'

cat <<EOF
$CARRY: $(ls "$CARRY/wheels" | tr '\n' ' ')+ ${#FILES[@]} Multi30k files
travels: $((total / 1024)) KiB of 64 MiB (carried $((carried / 1024)) KiB, working tree \
$((tree / 1024)) KiB)

The device call (tool \`run\`), once per task that has a GPU lent:
  command:   $COMMAND
  carry:     ["$CARRY"]
  timeout_s: 600
Then copy gpu_check.json from the reply's files_at to benchmarks/results/gpu_check.json, commit
it, and give the machine back (give_back).
EOF
