#!/usr/bin/env bash
# The official postgres image's first-start contract, for Debian's PostgreSQL: on an empty
# $PGDATA, initdb with POSTGRES_USER / POSTGRES_PASSWORD, run /docker-entrypoint-initdb.d/*.sh
# against a server that listens on its socket only, stop it; then run the server on every
# interface with password (scram-sha-256) logins over TCP.
set -euo pipefail
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
export POSTGRES_USER="${POSTGRES_USER:-postgres}"

initialise() {
    local password_file
    password_file="$(mktemp)"
    printf '%s' "$POSTGRES_PASSWORD" >"$password_file"
    initdb --username="$POSTGRES_USER" --pwfile="$password_file" --encoding=UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA"
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    local script
    for script in /docker-entrypoint-initdb.d/*.sh; do
        [ -e "$script" ] || continue
        echo "postgres-entrypoint: running $script"
        if [ -x "$script" ]; then "$script"; else . "$script"; fi
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initialise
fi
if [ "${1:-}" = "postgres" ]; then
    shift
    exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
fi
exec "$@"
