# syntax=docker/dockerfile:1.17
# The Airflow image for the api-server, scheduler, dag-processor, triggerer and airflow-init:
# the official image plus the project's DAG and the `pipeline` package the DAG file imports.
#
#   docker build -f docker/airflow.Dockerfile -t mt-airflow:0.1.0 .    # from the repo root
#
# These components only parse the DAG and schedule it; no stage runs here (the Celery worker,
# on the pipeline image, runs them). So the heavy dependencies of requirements.lock (TensorFlow,
# DVC, MLflow, GX) stay out, and the DAG must keep its parse-time imports light (Airflow, the
# standard library, PyYAML and pipeline.config / pipeline.paths); tests/test_docker.py checks it.

# AIRFLOW_IMAGE: the official image users build on; `make compose-check` passes a stand-in built
# from Debian's Python and PyPI (docker/check/airflow.Dockerfile), since it cannot pull this one.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}
LABEL org.opencontainers.image.title="mt-airflow" \
      org.opencontainers.image.description="Apache Airflow 3.3.2 with the retrain_translation DAG" \
      org.opencontainers.image.licenses="MIT"

# The same project tree as the pipeline image (MT_PROJECT_DIR), code only and read-only; the
# package is on PYTHONPATH rather than pip-installed, so no build step and no dependency of it
# can move the official image's constrained Airflow packages.
COPY params.yaml dvc.yaml /opt/mt/project/
COPY pipeline/ /opt/mt/project/pipeline/
COPY dags/ /opt/airflow/dags/

ENV MT_PROJECT_DIR=/opt/mt/project \
    PYTHONPATH=/opt/mt/project

# The official image's non-root user (uid 50000, gid 0); compose.yaml adds a health check per
# component, since each serves a different one (REST version, scheduler /health, job checks).
USER 50000
