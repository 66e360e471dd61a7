#!/usr/bin/env bash
# Write docker/.env from docker/.env.example with a fresh random value for every blank secret.
# Refuses to overwrite an existing docker/.env: new database passwords would no longer match the
# roles PostgreSQL created on its first start.
#
#   docker/make-env.sh [TARGET]     # TARGET defaults to docker/.env
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${1:-$here/.env}"

if [ -e "$target" ]; then
    echo "make-env.sh: $target exists; edit it by hand or move it away first" >&2
    exit 1
fi

# 24 random bytes as hex (URL-safe for connection strings); Fernet wants 32 url-safe base64.
random_hex() { head -c 24 /dev/urandom | od -An -v -tx1 | tr -d ' \n'; }
fernet_key() { head -c 32 /dev/urandom | base64 | tr '+/' '-_'; }

umask 077
while IFS= read -r line; do
    case "$line" in
        AIRFLOW_FERNET_KEY= | MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=) echo "${line}$(fernet_key)" ;;
        *_PASSWORD= | *_SECRET= | *_SECRET_KEY=) echo "${line}$(random_hex)" ;;
        *) echo "$line" ;;
    esac
done <"$here/.env.example" >"$target"
echo "make-env.sh: wrote $target (mode 600); the Airflow admin password is AIRFLOW_ADMIN_PASSWORD"
