# syntax=docker/dockerfile:1.17
# The pipeline image: `mt` (every DVC stage) on TensorFlow's CUDA build. docker/compose.yaml also
# runs the Airflow Celery worker from it, so the DAG's `dvc repro <stage>` tasks get the GPU.
#
#   docker build -f docker/pipeline.Dockerfile -t mt-pipeline:0.1.0 .    # from the repo root
#   docker run --rm --gpus all mt-pipeline:0.1.0 registry list
#
# Why this base and not the lock's TensorFlow: requirements.lock pins tensorflow-cpu (what
# developers and CI run). docker/requirements-gpu.lock, derived from it by docker/lock.sh, keeps
# every other pin and swaps in tensorflow[and-cuda] at the same version; its nvidia-* wheels carry
# CUDA, cuDNN, cuBLAS and NCCL. So the base needs no CUDA toolkit: nvidia/cuda's small `base`
# flavour brings the container-toolkit settings and the CUDA forward-compatibility libraries, and
# the host needs only the NVIDIA driver. tensorflow/tensorflow:*-gpu was not used: it installs its
# own TensorFlow and Python packages system-wide, which a `uv pip sync` of our lock would fight.
# Python 3.11 is uv's managed CPython, since Ubuntu 24.04 ships 3.12.

#
# Build arguments (the defaults are what users build; `make compose-check` overrides them to build
# the same Dockerfile on bases made from Debian's packages, docs/deploy.md):
#   BASE_IMAGE            the base of both stages
#   UV_IMAGE              an image with the uv binary at /uv
#   UV_PYTHON_PREFERENCE  only-managed: uv downloads its own CPython PYTHON_VERSION;
#                         only-system: the base image's python PYTHON_VERSION (e.g. Debian's 3.11)
#   REQUIREMENTS_LOCK     the lock synced into the venv (requirements.lock: CPU TensorFlow)
ARG BASE_IMAGE=nvidia/cuda:12.9.1-base-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${BASE_IMAGE} AS builder
ARG PYTHON_VERSION=3.11.18
ARG UV_PYTHON_PREFERENCE=only-managed
ARG REQUIREMENTS_LOCK=docker/requirements-gpu.lock
COPY --from=uv /uv /usr/local/bin/uv
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=${UV_PYTHON_PREFERENCE} \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
# /opt/python stays empty with the base's own Python (the final stage copies it either way).
RUN mkdir -p /opt/python \
    && if [ "${UV_PYTHON_PREFERENCE}" = "only-managed" ]; then uv python install "${PYTHON_VERSION}"; fi \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv

# Dependencies first: this layer is rebuilt only when the lock changes, not on every code edit.
COPY ${REQUIREMENTS_LOCK} /tmp/requirements.lock
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip sync --python /opt/venv/bin/python --strict /tmp/requirements.lock

# The project tree DVC runs in (MT_PROJECT_DIR). Editable, so the code `mt` imports is the very
# file that dvc.yaml hashes as a stage dependency.
WORKDIR /opt/mt/project
COPY pyproject.toml README.md params.yaml dvc.yaml dvc.lock* .dvcignore ./
COPY .dvc/config .dvc/config
COPY pipeline/ pipeline/
RUN uv pip install --python /opt/venv/bin/python --no-deps --no-build-isolation -e . \
    && /opt/venv/bin/dvc config --local core.analytics false \
    && /opt/venv/bin/dvc config --local cache.dir /opt/mt/dvc-cache
# The repository at the image's commit, as a bare clone without the source's config (remotes,
# credential helpers): workers clone it onto the project volume (docker/project-init.sh), so each
# run works in a git worktree and ends as a DVC experiment (docs/airflow.md).
COPY .git /tmp/source.git
RUN git clone --quiet --bare --no-local /tmp/source.git /opt/mt/repo.git \
    && git -C /opt/mt/repo.git remote remove origin \
    && rm -rf /tmp/source.git


FROM ${BASE_IMAGE}
ARG MT_UID=50000
LABEL org.opencontainers.image.title="mt-pipeline" \
      org.opencontainers.image.description="LSTM NMT pipeline (mt CLI, DVC stages) on TensorFlow CUDA; also the Airflow Celery worker" \
      org.opencontainers.image.licenses="MIT"

# uid 50000, gid 0: the Airflow images' convention, so the shared log volume stays writable.
# git: each run's workspace is a worktree of the project (pipeline/workspaces.py). The image's
# bare clone stays root's, so git, run as mt, must be told to trust it (safe.directory):
# otherwise mt-project-init's fetch from it fails with "detected dubious ownership".
# hadolint ignore=DL3008
RUN useradd --uid "${MT_UID}" --gid 0 --create-home --home-dir /home/mt --shell /bin/bash mt \
    && apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && git config --system --add safe.directory /opt/mt/repo.git

COPY --from=builder /opt/python /opt/python
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/mt/project /opt/mt/project
COPY --from=builder /opt/mt/repo.git /opt/mt/repo.git
COPY docker/project-init.sh /usr/local/bin/mt-project-init
# The worker parses the DAG file it runs tasks from, at the same path as the dag-processor.
COPY dags/ /opt/airflow/dags/

# The project tree belongs to mt: it is the first content of the project volume, where
# mt-project-init makes it a git repository at the image's commit and runs add worktrees. The
# image's own copies (venv, the bare clone) stay root-owned.
WORKDIR /opt/mt/project
RUN mkdir -p data models reports .dvc/tmp /opt/mt/dvc-cache /opt/mt/corpus /opt/airflow/logs \
    && chown -R "${MT_UID}:0" /opt/mt/project \
    && chown "${MT_UID}:0" /opt/mt/dvc-cache /opt/mt/corpus /opt/airflow /opt/airflow/logs

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MT_PROJECT_DIR=/opt/mt/project \
    AIRFLOW_HOME=/opt/airflow \
    DVC_NO_ANALYTICS=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    TF_CPP_MIN_LOG_LEVEL=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

USER ${MT_UID}
# `mt` runs a stage and exits: there is no long-lived process to probe. Where this image runs
# the Celery worker, compose.yaml gives that service its own health check (celery inspect ping).
HEALTHCHECK NONE
ENTRYPOINT ["mt-project-init", "mt"]
CMD ["--help"]
