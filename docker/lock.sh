#!/usr/bin/env bash
# Derive the images' lock files from requirements.lock; rerun after every re-lock of it
# (tests/test_docker.py fails while they disagree).
#
#   requirements-gpu.lock     the pipeline image: the project's runtime dependencies at exactly
#                             requirements.lock's versions, TensorFlow's CUDA build
#                             (tensorflow[and-cuda], which brings the CUDA/cuDNN/NCCL wheels)
#                             in place of tensorflow-cpu, and no dev tools.
#   requirements-mlflow.lock  the MLflow tracking server: mlflow[auth] (its basic-auth app) + the
#                             PostgreSQL driver at the lock's versions (boto3 for an S3 artifact
#                             store: see README).
#
# Needs uv (the Makefile's pinned one: .venv/bin/uv, else uv on PATH) and the package index.
set -euo pipefail
cd "$(dirname "$0")/.."

uv_bin="${UV:-$( [ -x .venv/bin/uv ] && echo .venv/bin/uv || echo uv )}"
tf_version="$(sed -n 's/^tensorflow-cpu==//p' requirements.lock)"
if [ -z "$tf_version" ]; then
    echo "lock.sh: requirements.lock pins no tensorflow-cpu; nothing to swap for the CUDA build" >&2
    exit 1
fi

inputs="$(mktemp -d)"
trap 'rm -rf "$inputs"' EXIT
echo "tensorflow[and-cuda]==${tf_version}" >"$inputs/gpu.in"
# An override whose marker never holds removes tensorflow-cpu from the resolution.
echo "tensorflow-cpu ; sys_platform == 'never'" >"$inputs/drop-tensorflow-cpu.txt"
printf '%s\n' 'mlflow[auth]' psycopg2-binary >"$inputs/mlflow.in"

compile() {
    "$uv_bin" pip compile --quiet --no-annotate \
        --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
        --constraint requirements.lock --custom-compile-command "docker/lock.sh" "$@"
}

compile pyproject.toml "$inputs/gpu.in" --override "$inputs/drop-tensorflow-cpu.txt" \
    -o docker/requirements-gpu.lock
compile "$inputs/mlflow.in" -o docker/requirements-mlflow.lock
echo "lock.sh: wrote docker/requirements-gpu.lock and docker/requirements-mlflow.lock"
