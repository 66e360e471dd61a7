# syntax=docker/dockerfile:1.17
# `make compose-check`'s stand-in for redis:7.2.10-bookworm, which cannot be pulled where the
# check runs: Debian 12's redis-server (7.0) and redis-cli, data in /data (the working directory,
# where --appendonly writes), run as the redis user. docker/compose.yaml gives the command.
ARG DEBIAN_IMAGE=debian:12.12-slim
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
WORKDIR /data
# hadolint ignore=DL3066
USER redis
EXPOSE 6379
CMD ["redis-server"]
