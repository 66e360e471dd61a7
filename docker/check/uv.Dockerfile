# syntax=docker/dockerfile:1.17
# `make compose-check`'s stand-in for ghcr.io/astral-sh/uv: the same uv release from PyPI, its
# binary at /uv where pipeline.Dockerfile copies it from (build arg UV_IMAGE).
ARG PYTHON_IMAGE=python:3.11.18-slim-bookworm
FROM ${PYTHON_IMAGE}
# The Makefile's uv pin (tests/test_docker.py checks they agree).
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}" \
    && cp "$(command -v uv)" /uv
