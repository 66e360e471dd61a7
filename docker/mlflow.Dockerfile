# syntax=docker/dockerfile:1.17
# The MLflow tracking server and model registry, with the PostgreSQL driver the official
# ghcr.io/mlflow/mlflow image lacks and Flask-WTF, which its basic-auth app needs (mlflow[auth]).
# Versions come from docker/requirements-mlflow.lock, derived from requirements.lock by
# docker/lock.sh, so server and clients run the same MLflow.
#
#   docker build -f docker/mlflow.Dockerfile -t mt-mlflow:0.1.0 .    # from the repo root

# PYTHON_IMAGE: the official Python image; `make compose-check` passes Debian's python3.11
# (docker/check/python.Dockerfile), which answers to `python` and `pip` the same way.
ARG PYTHON_IMAGE=python:3.11.18-slim-bookworm
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mt-mlflow" \
      org.opencontainers.image.description="MLflow tracking server (PostgreSQL backend store, proxied artifacts)" \
      org.opencontainers.image.licenses="MIT"

COPY docker/requirements-mlflow.lock /tmp/requirements-mlflow.lock
# The lock is complete (every transitive pin), so --no-deps installs exactly it.
RUN pip install --no-cache-dir --no-deps -r /tmp/requirements-mlflow.lock \
    && pip check \
    && rm /tmp/requirements-mlflow.lock

# /mlflow/auth holds basic-auth's user database (compose mounts the mlflow-auth volume there).
RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin mlflow \
    && mkdir -p /mlflow/artifacts /mlflow/auth \
    && chown mlflow:mlflow /mlflow/artifacts /mlflow/auth

# No MLflow server jobs (GenAI evaluation, trace rollups): the pipeline runs none, and their ~8
# Huey consumers cost ~1.4 GB and 20 CPU s per start (benchmarks/mlflow_server_start.py).
ENV PYTHONUNBUFFERED=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
USER 1000
WORKDIR /home/mlflow
EXPOSE 5000
# /health is exempt from the server's Host-header check, so the probe works whatever the
# allowed hosts are.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=5)"]
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000", "--artifacts-destination", "/mlflow/artifacts"]
