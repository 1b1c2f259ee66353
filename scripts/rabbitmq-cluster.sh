#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, for the broker fault tests
# (tests/faults/test_broker_cluster.py). Debian's rabbitmq-server, run directly as the
# calling user (not through Debian's wrapper, which switches to the rabbitmq user):
#
#   node             AMQP (127.0.0.1)  distribution
#   fw-rmq1@localhost  5681              25681
#   fw-rmq2@localhost  5682              25682
#   fw-rmq3@localhost  5683              25683
#
# Data, logs, config and the cluster's own Erlang cookie (in its own HOME) live under
# .cache/rabbitmq-cluster/ (gitignored). Partition handling is pause_minority: a node cut
# off from the other two pauses and closes its clients' connections, so they fail over.
# The machine's own broker (rabbit@localhost, 5672) is never touched.
#
#   scripts/rabbitmq-cluster.sh start          start the nodes that are down, join them (idempotent)
#   scripts/rabbitmq-cluster.sh stop           stop every node
#   scripts/rabbitmq-cluster.sh status         cluster status (exit 1 when a node is down)
#   scripts/rabbitmq-cluster.sh start-node N   start node N (1-3) alone, e.g. after a kill
#   scripts/rabbitmq-cluster.sh pid N          the OS pid of node N's Erlang VM
#   scripts/rabbitmq-cluster.sh urls           the AMQP URLs, comma-separated
#   scripts/rabbitmq-cluster.sh partition N    cut node N off from the other two (it stays up)
#   scripts/rabbitmq-cluster.sh heal N         reconnect node N
#   scripts/rabbitmq-cluster.sh reset          stop and delete every node's data
#
# Environment: FLEETWIRE_CLUSTER_DIR (default <repo>/.cache/rabbitmq-cluster),
# FLEETWIRE_CLUSTER_TIMEOUT (seconds per node to start, default 60).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE="${FLEETWIRE_CLUSTER_DIR:-$ROOT/.cache/rabbitmq-cluster}"
TIMEOUT="${FLEETWIRE_CLUSTER_TIMEOUT:-60}"
BIN=/usr/lib/rabbitmq/bin
NODES=(1 2 3)

die() {
  printf 'rabbitmq-cluster: ERROR: %s\n' "$*" >&2
  exit 1
}
[[ -x $BIN/rabbitmq-server ]] || die "rabbitmq-server is not installed (apt-get install rabbitmq-server)"

name_of() { printf 'fw-rmq%s@localhost' "$1"; }
amqp_port() { printf '%s' $((5680 + $1)); }
dist_port() { printf '%s' $((25680 + $1)); }

# Everything a node or a CLI call of this cluster needs: its own HOME (the cookie), its own
# config and env files instead of /etc/rabbitmq's, its own data and log directories.
node_env() {
  local n=$1 dir="$BASE/node$1"
  export HOME="$BASE/home"
  export RABBITMQ_NODENAME
  RABBITMQ_NODENAME="$(name_of "$n")"
  export RABBITMQ_NODE_PORT
  RABBITMQ_NODE_PORT="$(amqp_port "$n")"
  export RABBITMQ_DIST_PORT
  RABBITMQ_DIST_PORT="$(dist_port "$n")"
  export RABBITMQ_CONF_ENV_FILE="$BASE/rabbitmq-env.conf"
  export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$BASE/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$dir/mnesia"
  export RABBITMQ_LOG_BASE="$dir/log"
  export RABBITMQ_PID_FILE="$dir/pid"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export ERL_CRASH_DUMP="$BASE/erl_crash.dump"
  export RABBITMQ_SERVER_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel net_ticktime 10"
}

ctl() {
  local n=$1
  shift
  (node_env "$n" && "$BIN/rabbitmqctl" -n "$(name_of "$n")" "$@")
}

prepare() {
  mkdir -p "$BASE/home"
  if [[ ! -f $BASE/home/.erlang.cookie ]]; then
    umask 077
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr 'a-f' 'A-F' >"$BASE/home/.erlang.cookie"
    chmod 400 "$BASE/home/.erlang.cookie"
  fi
  : >"$BASE/rabbitmq-env.conf"
  printf '[].\n' >"$BASE/enabled_plugins"
  for n in "${NODES[@]}"; do
    local dir="$BASE/node$n"
    mkdir -p "$dir/mnesia" "$dir/log"
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
cluster_partition_handling = pause_minority
loopback_users = none
log.file.level = info
log.console = false
EOF
    printf '[].\n' >"$dir/advanced.config"
  done
}

running() { ctl "$1" ping >/dev/null 2>&1; }

# The end of node N's logs, for an error message.
node_logs() {
  tail -n 15 "$BASE/node$1/startup.log" "$BASE/node$1/log/$(name_of "$1").log" 2>/dev/null || true
}

start_node() {
  local n=$1
  running "$n" && return 0
  rm -f "$BASE/node$n/pid"
  (node_env "$n" && cd "$BASE" && "$BIN/rabbitmq-server" -detached) >"$BASE/node$n/startup.log" 2>&1 ||
    die "node $(name_of "$n") did not start:
$(node_logs "$n")"
}

await_node() {
  local n=$1 waited=0
  # await_startup gives up at once on a VM not yet registered with epmd: wait for that.
  until running "$n"; do
    ((waited++ < TIMEOUT * 2)) || die "node $(name_of "$n") not reachable in ${TIMEOUT}s:
$(node_logs "$n")"
    sleep 0.5
  done
  ctl "$n" await_startup --timeout "$TIMEOUT" >/dev/null 2>&1 ||
    die "node $(name_of "$n") did not come up in ${TIMEOUT}s:
$(node_logs "$n")"
}

in_cluster() { # is node $1 clustered with node 1?
  ctl 1 cluster_status --formatter json 2>/dev/null | grep -q "\"$(name_of "$1")\""
}

join() {
  local n=$1
  in_cluster "$n" && return 0
  ctl "$n" stop_app >/dev/null
  ctl "$n" join_cluster "$(name_of 1)" >/dev/null
  ctl "$n" start_app >/dev/null
}

cmd_start() {
  prepare
  local started
  started=$(date +%s%N)
  for n in "${NODES[@]}"; do start_node "$n"; done
  for n in "${NODES[@]}"; do await_node "$n"; done
  for n in 2 3; do join "$n"; done
  printf 'rabbitmq-cluster: 3 nodes up (%s) in %s ms\n' "$(cmd_urls)" \
    $((($(date +%s%N) - started) / 1000000))
}

cmd_start_node() {
  prepare
  start_node "$1"
  await_node "$1"
}

cmd_stop() {
  for n in "${NODES[@]}"; do
    if running "$n"; then ctl "$n" stop >/dev/null 2>&1 || true; fi
  done
}

cmd_status() {
  local down=0
  for n in "${NODES[@]}"; do
    if running "$n"; then echo "$(name_of "$n") up (amqp $(amqp_port "$n"))"; else
      echo "$(name_of "$n") down"
      down=1
    fi
  done
  for n in "${NODES[@]}"; do
    if running "$n"; then
      echo "running nodes as $(name_of "$n") sees them: $(ctl "$n" eval 'rabbit_nodes:all_running().' | tr -d '\n')"
      break
    fi
  done
  return $down
}

cmd_pid() { echo "$(cat "$BASE/node$1/pid")"; }

cmd_urls() {
  local urls=()
  for n in "${NODES[@]}"; do urls+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/"); done
  (IFS=,; echo "${urls[*]}")
}

# A partition without touching the network: node N is given a wrong cookie for its two
# peers and disconnected from them. Erlang then refuses the connection either way (each
# side checks the other's cookie), so the cut lasts until `heal`; the CLI, which connects
# with the cluster's cookie under a name of its own, can still reach node N.
cmd_partition() {
  local n=$1 peers=() erl
  for m in "${NODES[@]}"; do [[ $m == "$n" ]] || peers+=("'$(name_of "$m")'"); done
  erl="[begin erlang:set_cookie(P, 'fw_partitioned'), erlang:disconnect_node(P) end || P <- [${peers[0]}, ${peers[1]}]], ok."
  ctl "$n" eval "$erl" >/dev/null
}

cmd_heal() {
  local n=$1 peers=() erl
  for m in "${NODES[@]}"; do [[ $m == "$n" ]] || peers+=("'$(name_of "$m")'"); done
  erl="[begin erlang:set_cookie(P, erlang:get_cookie()), net_adm:ping(P) end || P <- [${peers[0]}, ${peers[1]}]]."
  ctl "$n" eval "$erl" >/dev/null
}

cmd_reset() {
  cmd_stop
  rm -rf "$BASE"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  start-node) cmd_start_node "${2:?node number}" ;;
  pid) cmd_pid "${2:?node number}" ;;
  urls) cmd_urls ;;
  partition) cmd_partition "${2:?node number}" ;;
  heal) cmd_heal "${2:?node number}" ;;
  reset) cmd_reset ;;
  *) die "usage: $0 start|stop|status|start-node N|pid N|urls|partition N|heal N|reset" ;;
esac
