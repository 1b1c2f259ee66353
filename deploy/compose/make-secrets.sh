#!/usr/bin/env bash
# Writes the secrets compose.yaml mounts into ./secrets (random passwords; the DSNs and URLs
# the fleetwire services read through FLEETWIRE_SECRETS_DIR). Refuses to overwrite them.
set -euo pipefail
cd "$(dirname "$0")"
[[ -e secrets ]] && { echo "secrets/ exists; remove it first to make new ones" >&2; exit 1; }
umask 077
mkdir secrets
password() { head -c 24 /dev/urandom | base64 | tr -d '/+=' ; }
pg=$(password) mq=$(password) rd=$(password)
printf '%s' "$pg" >secrets/postgres_password
printf '%s' "$rd" >secrets/redis_password
printf 'default_user = fleetwire\ndefault_pass = %s\n' "$mq" >secrets/rabbitmq-credentials.conf
printf 'postgresql://fleetwire:%s@postgres:5432/fleetwire' "$pg" >secrets/FLEETWIRE_POSTGRES_DSN
printf 'amqp://fleetwire:%s@rabbitmq:5672/' "$mq" >secrets/FLEETWIRE_RABBITMQ_URL
printf 'redis://:%s@redis:6379/0' "$rd" >secrets/FLEETWIRE_REDIS_URL
echo "secrets written to $(pwd)/secrets (mode 0600). Give them to the users that read them:"
echo "  chown 10001:10001 secrets/FLEETWIRE_*   # the fleetwire image"
echo "  chown 999:999 secrets/postgres_password secrets/rabbitmq-credentials.conf   # postgres, rabbitmq images"
