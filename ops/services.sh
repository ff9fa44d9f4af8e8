#!/usr/bin/env bash
# Brings up Redis, PostgreSQL and ClickHouse on this machine when they are not running,
# installing them from the OS packages (Debian) when missing, and installs Chromium for the
# console's browser test. Idempotent: safe to run again.
#   bash ops/services.sh          start what is missing, then wait until each answers
#   bash ops/services.sh check    only report what answers
#   bash ops/services.sh cluster  the same, then a local Redis Cluster (3 masters + 3 replicas, ops/redis-cluster.sh)
set -euo pipefail

REDIS_PORT=${REDIS_PORT:-6379}
PG_PORT=${PG_PORT:-5432}
CH_HTTP=${CH_HTTP:-http://127.0.0.1:8123}
APP_DB=${APP_DB:-agentmeter}

say() { printf '[services] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  say "installing $* from the OS packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/tmp/agentmeter-apt.log 2>&1 || {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >>/tmp/agentmeter-apt.log 2>&1
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>/tmp/agentmeter-apt.log 2>&1
  } || { say "apt-get install $* failed; see /tmp/agentmeter-apt.log"; exit 1; }
}

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then say "$name is up"; return 0; fi
    sleep 1
  done
  say "$name did not come up within 60 s"; return 1
}

redis_up() { redis-cli -p "$REDIS_PORT" ping | grep -q PONG; }
pg_up() { pg_isready -h 127.0.0.1 -p "$PG_PORT" -q; }
ch_up() { curl -fsS "$CH_HTTP/ping" | grep -q Ok; }

if [ "${1:-}" = check ]; then
  redis_up && say "redis: up" || say "redis: down"
  pg_up && say "postgresql: up" || say "postgresql: down"
  ch_up && say "clickhouse: up" || say "clickhouse: down"
  exit 0
fi

# --- The CPU scheduler: one ranking for every process of the box -----------------------
# `npm start` ranks its processes by niceness (the API first, the way to the ledger next, the
# stages after the ledger last) and this script puts ClickHouse below them (CLICKHOUSE_NICE). With
# the kernel's scheduler autogroups on, a niceness ranks a process only within its session: a
# service started with setsid (ClickHouse here, Redis, every PostgreSQL backend) is a group of its
# own that takes as large a share as the whole pipeline, so ClickHouse's merges took the cores from
# the way to the ledger at nice 10 all the same. With them off, at 10,000 events/s the
# ingest-to-ledger p99 came under 250 ms with no refusal in most runs, against a third with them
# on (BENCHMARKS.md, fifty-second session). Containers and systemd units sit in cgroups of their
# own, where autogroups do not apply: rank those with the cgroup's CPU weight.
# SCHED_AUTOGROUP=keep leaves the kernel's setting as it is.
autogroup=/proc/sys/kernel/sched_autogroup_enabled
# The kernel places a thread in its autogroup when it starts or changes session: services already
# running stay where they are unless moved to another cpu cgroup and back (cgroup v1 here). Whole
# processes (cgroup.procs), each straight back, so few threads are born in the scratch group; any
# that are (a backend forked meanwhile) are moved back before it is removed.
regroup_running_services() {
  local cg=/sys/fs/cgroup/cpu scratch=/sys/fs/cgroup/cpu/agentmeter-regroup pid task _
  moved=0
  [ -w "$cg/cgroup.procs" ] || return 1
  mkdir -p "$scratch" 2>/dev/null || return 1
  for pid in $(pgrep -x 'postgres|redis-server|clickhouse-serv' 2>/dev/null); do
    grep -Eq '^[0-9]+:([^:]*,)?cpu(,[^:]*)?:/$' "/proc/$pid/cgroup" 2>/dev/null || continue # a cgroup of its own: no autogroup
    { echo "$pid" >"$scratch/cgroup.procs" && echo "$pid" >"$cg/cgroup.procs" && moved=$((moved + 1)); } 2>/dev/null || true
  done
  for _ in 1 2 3 4 5; do
    [ -n "$(cat "$scratch/tasks" 2>/dev/null)" ] || break # (cgroup files have no size)
    while read -r task; do echo "$task" >"$cg/tasks" 2>/dev/null || true; done <"$scratch/tasks"
  done
  rmdir "$scratch" 2>/dev/null || say "scheduler: $scratch still holds a thread; bash ops/services.sh again moves it back"
}
SCHED_AUTOGROUP=${SCHED_AUTOGROUP:-off}
case "$SCHED_AUTOGROUP" in
  off | keep) ;;
  *) say "SCHED_AUTOGROUP=${SCHED_AUTOGROUP}: off (the default) or keep; turning them off"; SCHED_AUTOGROUP=off ;;
esac
if [ ! -r "$autogroup" ] || [ "$SCHED_AUTOGROUP" = keep ]; then
  if [ -r "$autogroup" ] && [ "$(cat "$autogroup")" != 0 ]; then
    say "scheduler: autogroups left on (SCHED_AUTOGROUP=keep): niceness ranks a process only within its session"
  fi
elif [ "$(cat "$autogroup")" != 0 ] && ! { echo 0 >"$autogroup"; } 2>/dev/null; then
  say "scheduler: autogroups are on and could not be turned off (not root?): niceness ranks a process only within its session"
elif regroup_running_services; then
  # Again when they were off already: a service started while they were on is still in its own.
  say "scheduler: autogroups off (SCHED_AUTOGROUP=keep to leave them): niceness ranks every process of the box ($moved running service processes placed again)"
else
  say "scheduler: autogroups off for processes started from now on; a service started while they were on keeps its own until restarted"
fi

# --- Redis ---------------------------------------------------------------------------
if ! redis_up; then
  command -v redis-server >/dev/null || apt_install redis-server redis-tools
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/agentmeter.log
  wait_for redis redis_up
fi
# An evicted stream entry is a lost event: Redis must refuse writes instead of evicting.
redis-cli -p "$REDIS_PORT" config set maxmemory-policy noeviction >/dev/null

# --- PostgreSQL -----------------------------------------------------------------------
if ! pg_up; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-contrib
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for postgresql pg_up
fi
if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$APP_DB'" | grep -q 1; then
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE $APP_DB" >/dev/null 2>&1 || true
  say "database $APP_DB ready"
fi

# --- ClickHouse -----------------------------------------------------------------------
# ClickHouse's allocator (jemalloc) runs with its defaults: freed pages go back to the kernel
# after about 10 s. Keeping them (MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1) cut its page
# faults and its CPU per event by a quarter at 5,000 events/s (BENCHMARKS.md, thirty-ninth
# session), but its resident memory never came down again: after a day of bench runs it reached
# 21.8 GB of the box's 24, the machine stalled for minutes and the kernel killed ClickHouse
# (fortieth session). CLICKHOUSE_MALLOC_CONF passes jemalloc options to a ClickHouse this script
# starts (not to one already running).
ch_malloc_conf=${CLICKHOUSE_MALLOC_CONF-}
if ! ch_up; then
  command -v clickhouse-server >/dev/null || apt_install clickhouse-server clickhouse-client
  mkdir -p /var/lib/clickhouse /var/log/clickhouse-server
  chown -R clickhouse:clickhouse /var/lib/clickhouse /var/log/clickhouse-server 2>/dev/null || true
  # No systemd here: run it as its own user, detached from this shell.
  if [ "$(id -u)" = 0 ]; then
    setsid runuser -u clickhouse -- env MALLOC_CONF="$ch_malloc_conf" clickhouse-server --config-file=/etc/clickhouse-server/config.xml \
      >/var/log/clickhouse-server/agentmeter-stdout.log 2>&1 < /dev/null &
  else
    setsid sudo -u clickhouse env MALLOC_CONF="$ch_malloc_conf" clickhouse-server --config-file=/etc/clickhouse-server/config.xml \
      >/tmp/agentmeter-clickhouse.log 2>&1 < /dev/null &
  fi
  wait_for clickhouse ch_up
fi
# On a box it shares with the pipeline, ClickHouse yields the CPU to the billing path: its merges
# and inserts come in bursts of most of a core, and at nice 0 they took it from the stage
# processes (then at nice 10). At nice 10 too, the ingest-to-ledger p99 at 10,000 events/s was 279 ms
# against 336 (means of four alternating pairs; single runs spread wider than that) and --rate max
# did not drop (BENCHMARKS.md, thirty-seventh session).
# Every thread: a thread's niceness is its own. CLICKHOUSE_NICE=0 leaves it as it is. It ranks
# ClickHouse against the pipeline only with the scheduler's autogroups off (see above).
ch_nice=${CLICKHOUSE_NICE:-10}
if [ "$ch_nice" != 0 ]; then
  for pid in $(pgrep -f '^clickhouse-server' 2>/dev/null); do
    for task in /proc/"$pid"/task/*; do renice -n "$ch_nice" -p "${task##*/}" >/dev/null 2>&1 || true; done
  done
  say "clickhouse: at nice $ch_nice (CLICKHOUSE_NICE)"
fi
# --- Chromium (the console's browser test drives it headless with puppeteer-core) ---------
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  apt_install chromium
fi
say "redis, postgresql and clickhouse are up; chromium is installed"

if [ "${1:-}" = cluster ]; then bash "$(dirname "$0")/redis-cluster.sh"; fi
