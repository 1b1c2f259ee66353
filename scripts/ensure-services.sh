#!/usr/bin/env bash
# Makes sure the three local services fleetwire needs answer on 127.0.0.1:
#   RabbitMQ   127.0.0.1:5672  (guest/guest)
#   Redis      127.0.0.1:6379
#   PostgreSQL 127.0.0.1:5432  (user postgres, no password over TCP)
# For each one: answering -> nothing to do; installed but not answering -> start it;
# not installed -> apt-get install it (Debian/Ubuntu), then start it. Idempotent; when all
# three already answer it only probes them (well under a second).
#
# Also installs, with apt-get, the Prometheus server and promtool (Debian package
# prometheus) that tests/integration/test_prometheus.py starts against a test mesh. Only
# installed, never started here: the test runs its own, on a port and data dir of its own.
#
# Environment:
#   FLEETWIRE_SERVICE_TIMEOUT  seconds to wait for each service to answer (default 90)
#
# Can also be sourced (functions only, nothing runs) — tests use that.
set -euo pipefail

# rabbitmq-server, rabbitmqctl and friends live in /usr/sbin, which is not on every PATH.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

SERVICE_TIMEOUT="${FLEETWIRE_SERVICE_TIMEOUT:-90}"
APT_UPDATED=0

log() { printf '%s\n' "$*"; }
die() {
  printf 'ensure-services: ERROR: %s\n' "$*" >&2
  exit 1
}

# --- privileges --------------------------------------------------------------------------

SUDO=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
fi

# Runs a command as root: directly when we are root, through sudo when it exists.
as_root() {
  if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
    die "need root privileges to run '$*' (run this script as root, or install sudo)"
  fi
  "${SUDO[@]}" "$@"
}

# --- probes (fast, no side effects beyond one short connection) ---------------------------

# True when something accepts TCP connections on 127.0.0.1:$1.
tcp_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# True when RabbitMQ speaks AMQP on 5672. The listener can open a moment before the broker
# handles connections, so a bare TCP check is not enough: send the AMQP 0-9-1 protocol
# header and expect the first byte of the broker's reply, a method frame (type 1,
# Connection.Start). Costs a few milliseconds; the broker logs the dropped connection as
# "client unexpectedly closed TCP connection".
rabbitmq_answers() {
  local first
  first=$(timeout 3 bash -c \
    'exec 3<>/dev/tcp/127.0.0.1/5672 && printf "AMQP\x00\x00\x09\x01" >&3 && head -c 1 <&3' \
    2>/dev/null | od -An -tx1 | tr -d ' \n') || return 1
  [[ $first == 01 ]]
}

redis_answers() {
  local reply
  if command -v redis-cli >/dev/null 2>&1; then
    reply=$(timeout 3 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) || return 1
  else
    reply=$(timeout 3 bash -c \
      'exec 3<>/dev/tcp/127.0.0.1/6379 && printf "PING\r\n" >&3 && head -c 5 <&3' \
      2>/dev/null) || return 1
    reply=${reply#+}
  fi
  [[ $reply == PONG ]]
}

postgres_answers() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -t 3 -h 127.0.0.1 -p 5432
  else
    tcp_open 5432
  fi
}

# Waits until "$2" (a probe function) succeeds; dies naming service "$1" after the timeout.
wait_for() {
  local name=$1 probe=$2 hint=$3
  local deadline=$((SECONDS + SERVICE_TIMEOUT))
  until "$probe"; do
    if ((SECONDS >= deadline)); then
      die "$name did not answer on 127.0.0.1 within ${SERVICE_TIMEOUT}s ($hint)"
    fi
    sleep 0.5
  done
}

# --- what is installed --------------------------------------------------------------------

# Version directory of the newest PostgreSQL cluster config (the "$(ls /etc/postgresql)"
# of the docs), empty if none.
pg_version() {
  local d versions=()
  for d in /etc/postgresql/*/main; do
    [[ -d $d ]] && versions+=("$(basename "$(dirname "$d")")")
  done
  ((${#versions[@]})) || return 0
  printf '%s\n' "${versions[@]}" | sort -V | tail -n 1
}

rabbitmq_installed() { command -v rabbitmq-server >/dev/null 2>&1 && command -v rabbitmqctl >/dev/null 2>&1; }
redis_installed() { command -v redis-server >/dev/null 2>&1; }
prometheus_installed() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }
postgres_installed() { command -v pg_ctlcluster >/dev/null 2>&1 && [[ -n $(pg_version) ]]; }

apt_install() {
  command -v apt-get >/dev/null 2>&1 ||
    die "not installed: $*; this script installs them only with apt-get (Debian/Ubuntu) — install them yourself"
  if ((APT_UPDATED == 0)); then
    log "apt-get update ..."
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
      die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "apt-get install -y $* ..."
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null ||
    die "apt-get install $* failed"
}

# --- starting -----------------------------------------------------------------------------

start_rabbitmq() {
  as_root rabbitmq-server -detached ||
    die "rabbitmq-server -detached failed (see /var/log/rabbitmq/)"
  # await_startup needs the Erlang node to exist already; right after -detached it may
  # not yet, so retry until the deadline.
  local deadline=$((SECONDS + SERVICE_TIMEOUT)) left
  while :; do
    left=$((deadline - SECONDS))
    ((left > 0)) || die "RabbitMQ did not finish starting within ${SERVICE_TIMEOUT}s (see /var/log/rabbitmq/)"
    if timeout $((left + 5)) "${SUDO[@]}" rabbitmqctl await_startup --timeout "$left" >/dev/null 2>&1; then
      break
    fi
    sleep 1
  done
}

start_redis() {
  (cd / && redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no >/dev/null) ||
    die "redis-server failed to start"
}

start_postgres() {
  local ver
  ver=$(pg_version)
  # Already running (e.g. still starting up, or just started by the package) -> just wait.
  if as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main status >/dev/null 2>&1; then
    return 0
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start ||
    die "pg_ctlcluster $ver main start failed (see /var/log/postgresql/postgresql-$ver-main.log)"
}

# --- PostgreSQL: passwordless TCP login as postgres ----------------------------------------

# True when user postgres can log in over TCP to 127.0.0.1:$1 without any password.
pg_tcp_login_ok() {
  local port=${1:-5432}
  env -u PGPASSWORD PGPASSFILE=/dev/null PGCONNECT_TIMEOUT=5 \
    psql -X -w -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1
}

# Puts trust rules for 127.0.0.1 and ::1 into pg_hba file $1. They go *before* the first
# existing rule: pg_hba.conf is first-match, and Debian's default file already has
# "host all all 127.0.0.1/32 scram-sha-256", which would win over rules appended after it.
pg_add_trust_rules() {
  local hba=$1 tmp
  tmp=$(mktemp)
  awk '
    !done && $0 !~ /^[[:space:]]*(#|$)/ {
      print "# fleetwire (scripts/ensure-services.sh): passwordless TCP logins from this machine"
      print "host    all             all             127.0.0.1/32            trust"
      print "host    all             all             ::1/128                 trust"
      done = 1
    }
    { print }
    END {
      if (!done) {
        print "# fleetwire (scripts/ensure-services.sh): passwordless TCP logins from this machine"
        print "host    all             all             127.0.0.1/32            trust"
        print "host    all             all             ::1/128                 trust"
      }
    }' "$hba" >"$tmp"
  as_root cp -p "$hba" "$hba.fleetwire-backup"
  # cat into the existing file keeps its owner and mode.
  as_root tee "$hba" <"$tmp" >/dev/null
  rm -f "$tmp"
}

# Makes passwordless TCP login work on port $2, editing hba file $1 and running the reload
# command "${@:3}" if needed. Prints nothing when it already works.
pg_ensure_trust() {
  local hba=$1 port=$2
  shift 2
  pg_tcp_login_ok "$port" && return 0
  command -v psql >/dev/null 2>&1 ||
    die "cannot check the PostgreSQL login: psql is missing (apt-get install postgresql-client)"
  [[ -f $hba ]] || die "postgres cannot log in over TCP without a password, and $hba does not exist to fix it"
  pg_add_trust_rules "$hba"
  as_root "$@" >/dev/null || die "reloading PostgreSQL failed: $*"
  local deadline=$((SECONDS + 10))
  until pg_tcp_login_ok "$port"; do
    ((SECONDS < deadline)) ||
      die "postgres still cannot log in over TCP to 127.0.0.1:$port without a password after adding trust rules to $hba"
    sleep 0.5
  done
  log "postgres: added trust rules for 127.0.0.1 and ::1 to $hba (backup: $hba.fleetwire-backup)"
}

# --- main ---------------------------------------------------------------------------------

main() {
  local -A state=()
  local -A package=([rabbitmq]=rabbitmq-server [redis]=redis-server [postgres]=postgresql)
  local -A label=([rabbitmq]=rabbitmq [redis]=redis [postgres]=postgresql)
  local svc missing=()

  for svc in rabbitmq redis postgres; do
    if "${svc}_answers"; then
      state[$svc]="up (already running)"
    elif "${svc}_installed"; then
      state[$svc]="started"
    else
      state[$svc]="installed and started"
      missing+=("${package[$svc]}")
    fi
  done

  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"

  # Without its Recommends (prometheus-node-exporter, a daemon the tests do not need).
  local prometheus_state="already installed"
  if ! prometheus_installed; then
    prometheus_state="installed"
    apt_install --no-install-recommends prometheus
    prometheus_installed || die "prometheus or promtool is missing after apt-get install prometheus"
  fi

  # Start what does not answer (the package may have started it during install), then wait
  # for all of them. RabbitMQ is started last because start_rabbitmq already waits for it.
  for svc in redis postgres rabbitmq; do
    [[ ${state[$svc]} == up* ]] && continue
    if [[ $svc == postgres ]] && ! postgres_installed; then
      die "postgresql is installed but no cluster exists in /etc/postgresql (create one: pg_createcluster <version> main)"
    fi
    if ! "${svc}_answers"; then
      "start_${svc}"
    fi
  done

  wait_for redis redis_answers "check: redis-cli ping"
  wait_for postgres postgres_answers "check: pg_isready -h 127.0.0.1; log in /var/log/postgresql/"
  wait_for rabbitmq rabbitmq_answers "check: rabbitmqctl status; logs in /var/log/rabbitmq/"

  # The management plugin's HTTP API (127.0.0.1:15672) is where the scheduler's census reads
  # unacked messages per queue (FLEETWIRE_RABBITMQ_MANAGEMENT_URL); AMQP tells ready ones
  # only. Enabled on the running broker (a few seconds, once; it stays enabled).
  local management="already enabled"
  if ! as_root rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_management; then
    as_root rabbitmq-plugins enable rabbitmq_management >/dev/null ||
      die "rabbitmq-plugins enable rabbitmq_management failed (see /var/log/rabbitmq/)"
    management="enabled now"
  fi

  # Local trust rules go only into a cluster this run installed: an existing database's
  # authentication is never weakened. An existing one that asks for a password is left
  # alone, with what to do instead.
  local ver
  ver=$(pg_version)
  if [[ -n $ver && ${state[postgres]} == "installed and started" ]]; then
    pg_ensure_trust "/etc/postgresql/$ver/main/pg_hba.conf" 5432 \
      pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
  elif ! pg_tcp_login_ok 5432; then
    log "postgres: this existing PostgreSQL asks for a password over TCP; it is left as it" \
      "is. Give fleetwire credentials: FLEETWIRE_POSTGRES_DSN=postgresql://USER:PASSWORD@HOST/DB"
  fi

  for svc in rabbitmq redis postgres; do
    log "${label[$svc]}: ${state[$svc]}"
  done
  log "rabbitmq management API: $management"
  log "prometheus: $prometheus_state (not started; the tests start their own)"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
