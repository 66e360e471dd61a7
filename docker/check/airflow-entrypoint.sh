#!/usr/bin/env bash
# The part of the official Airflow image's entrypoint that docker/compose.yaml relies on:
# - _AIRFLOW_DB_MIGRATE=true: wait for the metadata database, then `airflow db migrate`;
# - _AIRFLOW_WWW_USER_CREATE=true: create the admin user _AIRFLOW_WWW_USER_USERNAME with
#   _AIRFLOW_WWW_USER_PASSWORD (FAB's `airflow users create`; an existing user is kept);
# - then `bash`/`python` commands run as given, anything else as `airflow <command>`.
set -euo pipefail

wait_for_database() {
    local tries=60
    until airflow db check >/dev/null 2>&1; do
        tries=$((tries - 1))
        if [ "$tries" -le 0 ]; then
            echo "entrypoint: the metadata database did not answer for 120 s" >&2
            exit 1
        fi
        sleep 2
    done
}

create_admin_user() {
    # FAB's `users create` reports an existing user and changes nothing (exit 0).
    : "${_AIRFLOW_WWW_USER_PASSWORD:?set _AIRFLOW_WWW_USER_PASSWORD}"
    local user="${_AIRFLOW_WWW_USER_USERNAME:-admin}"
    airflow users create --username "$user" --password "$_AIRFLOW_WWW_USER_PASSWORD" \
        --firstname Airflow --lastname Admin --email "${user}@localhost" --role Admin
}

if [ "${_AIRFLOW_DB_MIGRATE:-false}" = "true" ] || [ "${_AIRFLOW_WWW_USER_CREATE:-false}" = "true" ]; then
    wait_for_database
fi
if [ "${_AIRFLOW_DB_MIGRATE:-false}" = "true" ]; then
    airflow db migrate
fi
if [ "${_AIRFLOW_WWW_USER_CREATE:-false}" = "true" ]; then
    create_admin_user
fi

case "${1:-}" in
    bash | python | sh) exec "$@" ;;
    airflow) shift ;;
esac
exec airflow "$@"
