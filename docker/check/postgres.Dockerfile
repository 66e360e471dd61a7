# syntax=docker/dockerfile:1.17
# `make compose-check`'s stand-in for postgres:17.6-bookworm, which cannot be pulled where the
# check runs: Debian 12's PostgreSQL 15, with an entrypoint that keeps the official image's
# contract as docker/compose.yaml uses it (postgres-entrypoint.sh): POSTGRES_PASSWORD,
# POSTGRES_USER, the scripts in /docker-entrypoint-initdb.d on the first start of an empty
# /var/lib/postgresql/data, password logins over TCP, pg_isready on the PATH.
ARG DEBIAN_IMAGE=debian:12.12-slim
FROM ${DEBIAN_IMAGE}
# No cluster from the package: the entrypoint initialises the volume on its first start.
# hadolint ignore=DL3008
RUN mkdir -p /etc/postgresql-common \
    && echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf \
    && apt-get update && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql /docker-entrypoint-initdb.d \
    && chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql \
    && chmod 700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
# hadolint ignore=DL3066
USER postgres
# A fast shutdown (SIGINT), as the official image: the default SIGTERM waits for every client.
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
