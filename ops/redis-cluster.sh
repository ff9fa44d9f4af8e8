#!/usr/bin/env bash
# A local Redis Cluster of 3 masters and 3 replicas on this machine, from the OS package, for
# tests and for trying agentmeter on a cluster. Idempotent: safe to run again.
#   bash ops/redis-cluster.sh          start it (or check it is up), print REDIS_URL
#   bash ops/redis-cluster.sh stop     stop its six servers
#   bash ops/redis-cluster.sh status   print CLUSTER INFO of the first node
# Ports CLUSTER_BASE_PORT .. +5 (default 7100..7105); data under CLUSTER_DIR (default
# /var/lib/redis-cluster, or /tmp/agentmeter-redis-cluster when not writable). No persistence, as
# the standalone Redis here: a node that dies comes back empty and is replaced by its replica.
set -euo pipefail

BASE=${CLUSTER_BASE_PORT:-7100}
DIR=${CLUSTER_DIR:-/var/lib/redis-cluster}
mkdir -p "$DIR" 2>/dev/null || DIR=/tmp/agentmeter-redis-cluster
mkdir -p "$DIR"
PORTS=$(seq "$BASE" $((BASE + 5)))

say() { printf '[redis-cluster] %s\n' "$*" >&2; }
node_up() { redis-cli -p "$1" ping 2>/dev/null | grep -q PONG; }
cluster_ok() { redis-cli -p "$BASE" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; }

case "${1:-start}" in
  stop)
    for port in $PORTS; do redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; done
    say "stopped"
    exit 0
    ;;
  status)
    redis-cli -p "$BASE" cluster info
    redis-cli -p "$BASE" cluster nodes
    exit 0
    ;;
  start) ;;
  *) say "usage: bash ops/redis-cluster.sh [start|stop|status]"; exit 2 ;;
esac

command -v redis-server >/dev/null || { say "redis-server is missing: run bash ops/services.sh first"; exit 1; }

if cluster_ok; then
  say "up on ports $BASE-$((BASE + 5))"
  echo "REDIS_URL=redis+cluster://127.0.0.1:$BASE"
  exit 0
fi

for port in $PORTS; do
  if node_up "$port"; then continue; fi
  mkdir -p "$DIR/$port"
  # A node that restarts without its data must not rejoin with a stale nodes.conf.
  rm -f "$DIR/$port/nodes.conf"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
    --cluster-config-file "$DIR/$port/nodes.conf" --cluster-node-timeout 2000 \
    --save "" --appendonly no --maxmemory-policy noeviction \
    --dir "$DIR/$port" --logfile "$DIR/$port/redis.log"
done
for port in $PORTS; do
  for _ in $(seq 1 50); do node_up "$port" && break; sleep 0.1; done
  node_up "$port" || { say "node $port did not start; see $DIR/$port/redis.log"; exit 1; }
done

# Nodes that know no slot yet: form the cluster (a half-formed one is reset first).
if [ "$(redis-cli -p "$BASE" cluster info | awk -F: '/cluster_slots_assigned/ {print $2+0}')" -eq 0 ]; then
  for port in $PORTS; do redis-cli -p "$port" flushall >/dev/null; redis-cli -p "$port" cluster reset hard >/dev/null; done
  nodes=()
  for port in $PORTS; do nodes+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 \
    || { say "cluster create failed; see $DIR/create.log"; exit 1; }
fi
for _ in $(seq 1 100); do cluster_ok && break; sleep 0.2; done
cluster_ok || { say "the cluster did not reach cluster_state:ok; see bash ops/redis-cluster.sh status"; exit 1; }
# Every replica attached and in sync before tests fail a master over.
for _ in $(seq 1 100); do
  synced=0
  for port in $PORTS; do
    if redis-cli -p "$port" info replication | grep -q 'role:slave' && redis-cli -p "$port" info replication | grep -q 'master_link_status:up'; then synced=$((synced + 1)); fi
  done
  [ "$synced" -ge 3 ] && break
  sleep 0.2
done
say "up on ports $BASE-$((BASE + 5)): 3 masters, $synced replicas in sync"
echo "REDIS_URL=redis+cluster://127.0.0.1:$BASE"
