# syntax=docker/dockerfile:1.17
# `make compose-check`'s stand-in for apache/airflow:3.3.2-python3.11, which cannot be pulled
# where the check runs: Airflow from PyPI (requirements-airflow.txt) on Debian's Python, laid out
# as the official image is where docker/compose.yaml and docker/airflow.Dockerfile rely on it:
# user airflow (uid 50000, gid 0), AIRFLOW_HOME=/opt/airflow, curl for the health checks, and an
# entrypoint that honours _AIRFLOW_DB_MIGRATE and _AIRFLOW_WWW_USER_* (airflow-entrypoint.sh).
ARG PYTHON_IMAGE=python:3.11.18-slim-bookworm
FROM ${PYTHON_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
COPY requirements-airflow.txt /tmp/requirements-airflow.txt
RUN python -m venv /opt/airflow-venv \
    && /opt/airflow-venv/bin/pip install --no-cache-dir -r /tmp/requirements-airflow.txt \
    && rm /tmp/requirements-airflow.txt
RUN useradd --uid 50000 --gid 0 --create-home --home-dir /home/airflow --shell /bin/bash airflow \
    && mkdir -p /opt/airflow/dags /opt/airflow/logs /opt/airflow/plugins \
    && chown -R 50000:0 /opt/airflow \
    && chmod -R g+rwX /opt/airflow
COPY airflow-entrypoint.sh /entrypoint
ENV AIRFLOW_HOME=/opt/airflow \
    PATH=/opt/airflow-venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER 50000
WORKDIR /opt/airflow
ENTRYPOINT ["/entrypoint"]
CMD []
