# syntax=docker/dockerfile:1.17
# `make compose-check`'s stand-in for python:3.11.18-slim-bookworm, which cannot be pulled where
# the check runs: Debian 12's python3.11 and pip from Debian's archive, answering to `python` and
# `pip` like the official image (pip may install into the system Python, as there). The base of
# mlflow.Dockerfile, pipeline.Dockerfile and the other stand-ins in this folder.
#
# DEBIAN_IMAGE: Debian 12; the check passes its own debootstrap'd bookworm (`podman import`).
ARG DEBIAN_IMAGE=debian:12.12-slim
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3.11 python3.11-venv python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python \
    && ln -s /usr/bin/pip3 /usr/local/bin/pip
# pip and uv trust the system store, and with it any local CA the base carries (the check adds
# the host's, for hosts whose proxy re-signs TLS); uv's default is its own bundled roots.
ENV LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    UV_NATIVE_TLS=true
CMD ["python3.11"]
