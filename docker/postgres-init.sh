#!/usr/bin/env bash
# Creates one role and one database per service on a fresh PostgreSQL volume: Airflow's
# metadata DB and MLflow's backend store never share tables, owners or passwords.
#
# The postgres image runs every script in /docker-entrypoint-initdb.d once, as the superuser,
# only when the data volume is empty. Passwords come from the environment (docker/.env) and are
# passed to psql as variables, so no secret is spliced into SQL text by the shell.
#
# Also runs by hand against any server: PGHOST=... PGUSER=postgres ./postgres-init.sh
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD (docker/.env)}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD (docker/.env)}"
AIRFLOW_DB_NAME="${AIRFLOW_DB_NAME:-airflow}"
AIRFLOW_DB_USER="${AIRFLOW_DB_USER:-airflow}"
MLFLOW_DB_NAME="${MLFLOW_DB_NAME:-mlflow}"
MLFLOW_DB_USER="${MLFLOW_DB_USER:-mlflow}"

create_role_and_database() {
    local role="$1" password="$2" database="$3"
    # \gexec runs the generated statement only when the role/database is missing, so a second
    # run (by hand, on an existing server) changes nothing.
    psql -v ON_ERROR_STOP=1 --no-psqlrc \
        --username "${POSTGRES_USER:-${PGUSER:-postgres}}" --dbname postgres \
        -v role="$role" -v password="$password" -v database="$database" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('CREATE DATABASE %I OWNER %I ENCODING ''UTF8''', :'database', :'role')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'database') \gexec
SQL
    echo "postgres-init: role ${role} owns database ${database}"
}

create_role_and_database "$AIRFLOW_DB_USER" "$AIRFLOW_DB_PASSWORD" "$AIRFLOW_DB_NAME"
create_role_and_database "$MLFLOW_DB_USER" "$MLFLOW_DB_PASSWORD" "$MLFLOW_DB_NAME"
