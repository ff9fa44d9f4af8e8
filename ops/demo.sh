#!/usr/bin/env bash
# The newcomer's one command: from a fresh machine to events that became ledger rows and costs.
#   npm run demo                      install, services, build, migrate, seed, run the pipeline,
#                                     send ~30 s of demo traffic, show the results, stop the pipeline
#   npm run demo -- --keep            the same, but leave the pipeline running afterwards
#   npm run demo -- --stop            stop a pipeline an earlier `--keep` left running
#   npm run demo -- --duration 60 --rate 400
#   npm run demo -- --cluster         the same on a local Redis Cluster (3 masters + 3 replicas,
#                                     ops/redis-cluster.sh), PARTITIONS=3 and INGEST_DURABILITY=replica
#
# Safe to run again: the demo tenant in .demo/demo.json is reused while it exists in the
# database, and a pipeline started by an earlier --keep is reused rather than started twice.
# Everything the demo writes lives in .demo/ (ignored by git): demo.json (the demo tenant's
# tokens and keys), pipeline.pid and pipeline.log (the pipeline's logs).
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP=0
STOP_ONLY=0
CLUSTER=0
DURATION=30
RATE=200
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1 ;;
    --stop) STOP_ONLY=1 ;;
    --duration) DURATION=${2:?--duration needs seconds}; shift ;;
    --rate) RATE=${2:?--rate needs events per second}; shift ;;
    --cluster) CLUSTER=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

DEMO_DIR=.demo
PID_FILE=$DEMO_DIR/pipeline.pid
LOG_FILE=$DEMO_DIR/pipeline.log
SEED_FILE=$DEMO_DIR/demo.json
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/agentmeter}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '[demo] %s\n' "$*"; }

mkdir -p "$DEMO_DIR"
# The folder ignores itself: nothing the demo writes (tokens, keys, logs) is ever committed.
[ -f "$DEMO_DIR/.gitignore" ] || echo '*' > "$DEMO_DIR/.gitignore"

pipeline_pid() { # the pid of a pipeline this script started and that still runs, else nothing
  [ -f "$PID_FILE" ] || return 0
  local pid
  pid=$(cat "$PID_FILE")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q 'dist/ops/start.js' "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"
  else
    rm -f "$PID_FILE"
  fi
}

stop_pipeline() {
  local pid
  pid=$(pipeline_pid)
  [ -n "$pid" ] || { say "no demo pipeline is running"; return 0; }
  say "stopping the pipeline (pid $pid): each stage finishes and acks its batch in hand"
  kill -TERM "$pid"
  for _ in $(seq 1 45); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "still running after 45 s; killing its process group"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  say "pipeline stopped"
}

if [ "$STOP_ONLY" = 1 ]; then
  stop_pipeline
  exit 0
fi

STARTED_HERE=0
cleanup() {
  # On failure or Ctrl-C, do not leave a pipeline behind that this run started (unless --keep).
  if [ "$STARTED_HERE" = 1 ] && [ "$KEEP" = 0 ]; then stop_pipeline; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "dependencies"
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
else
  say "node_modules present (npm ci skipped)"
fi

step "services: Redis, PostgreSQL, ClickHouse"
if [ "$CLUSTER" = 1 ]; then
  bash ops/services.sh cluster
  # Every process below (pipeline, status, dlq) reads these: the streams of the 3 partitions
  # live on whichever master owns their slot; ingest answers 202 once a replica has the events.
  export REDIS_URL=redis+cluster://127.0.0.1:${CLUSTER_BASE_PORT:-7100}
  export PARTITIONS=${PARTITIONS:-3}
  export INGEST_DURABILITY=${INGEST_DURABILITY:-replica}
  say "on the local Redis Cluster: REDIS_URL=$REDIS_URL PARTITIONS=$PARTITIONS INGEST_DURABILITY=$INGEST_DURABILITY"
else
  bash ops/services.sh
fi

step "build"
npm run -s build
say "built into dist/"

step "migrations"
node dist/ops/migrate.js

step "demo tenant"
json_field() { node -e 'const d=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));process.stdout.write(String(d[process.argv[2]]??""))' "$SEED_FILE" "$1"; }
TENANT=""
if [ -s "$SEED_FILE" ]; then
  TENANT=$(json_field tenant_id || true)
  if [ -n "$TENANT" ] && [ "$(psql "$DATABASE_URL" -tAc "SELECT 1 FROM tenants WHERE id = '${TENANT//\'/}'" 2>/dev/null)" = 1 ]; then
    say "reusing the demo tenant $TENANT from $SEED_FILE"
  else
    say "$SEED_FILE names a tenant this database does not have; seeding a new one"
    TENANT=""
  fi
fi
if [ -z "$TENANT" ]; then
  node dist/ops/seed-demo.js > "$SEED_FILE.tmp"
  mv "$SEED_FILE.tmp" "$SEED_FILE"
  chmod 600 "$SEED_FILE"
  TENANT=$(json_field tenant_id)
  say "seeded the demo tenant $TENANT (3 customers, 6 teams, 12 agents, 6 apps); tokens and keys in $SEED_FILE"
fi
BASE_URL=$(json_field base_url)

step "pipeline"
healthy() { curl -fsS -m 2 "$BASE_URL/readyz" >/dev/null 2>&1; }
PID=$(pipeline_pid)
MODE_FILE=$DEMO_DIR/pipeline.redis
if [ -n "$PID" ] && [ "$(cat "$MODE_FILE" 2>/dev/null || echo standalone)" != "${REDIS_URL:-standalone}" ]; then
  say "the pipeline an earlier run left running (pid $PID) uses another Redis ($(cat "$MODE_FILE" 2>/dev/null)); stop it first: npm run demo -- --stop"
  exit 1
fi
if [ -n "$PID" ]; then
  say "the pipeline an earlier run left running (pid $PID) is still up; using it"
elif healthy; then
  say "an agentmeter API already answers at $BASE_URL (not started by this script); using it"
else
  say "starting the API and every stage (node dist/ops/start.js); logs in $LOG_FILE"
  setsid node dist/ops/start.js >>"$LOG_FILE" 2>&1 < /dev/null &
  echo $! > "$PID_FILE"
  echo "${REDIS_URL:-standalone}" > "$MODE_FILE"
  STARTED_HERE=1
  for i in $(seq 1 60); do
    healthy && break
    if [ -z "$(pipeline_pid)" ]; then say "the pipeline exited; the end of $LOG_FILE:"; tail -n 30 "$LOG_FILE"; exit 1; fi
    [ "$i" = 60 ] && { say "the API did not become ready within 60 s; see $LOG_FILE"; exit 1; }
    sleep 1
  done
  say "API ready at $BASE_URL (pid $(cat "$PID_FILE"))"
fi

step "demo traffic: ~$RATE events/s for $DURATION s"
node dist/ops/demo-traffic.js --demo "$SEED_FILE" --rate "$RATE" --duration "$DURATION"

step "status (after the pipeline drained)"
node dist/ops/status.js --drain 120

step "what the events became"
psql "$DATABASE_URL" -X -q -P pager=off -v ON_ERROR_STOP=1 -v tenant="$TENANT" <<'SQL'
\echo 'Ledger: one row per distinct event, cost in the subscription currency'
SELECT count(*) AS ledger_rows,
       count(*) FILTER (WHERE over_cap) AS over_spend_cap,
       (SELECT count(*) FROM ledger_duplicates d WHERE d.tenant_id = :'tenant') AS duplicates_not_billed,
       to_char(sum(cost_nano) / 1e9, 'FM999G999G990D00') || ' ' || min(currency) AS total_cost
FROM usage_ledger WHERE tenant_id = :'tenant';

\echo 'Ledger rows and cost per customer'
SELECT c.name AS customer, count(*) AS ledger_rows,
       count(*) FILTER (WHERE l.event_type = 'api.request') AS api_requests,
       sum(l.input_tokens + l.output_tokens) AS tokens,
       to_char(sum(l.cost_nano) / 1e9, 'FM999G999G990D00') || ' ' || min(l.currency) AS cost
FROM usage_ledger l JOIN customers c ON c.id = l.customer_id
WHERE l.tenant_id = :'tenant'
GROUP BY c.name ORDER BY c.name;

\echo 'Sessions by status'
SELECT status, count(*) AS sessions, round(avg(tool_calls), 1) AS avg_tool_calls,
       sum(errors) AS failed_calls,
       to_char(sum(cost_nano) / 1e9, 'FM999G999G990D00') AS cost
FROM mcp_sessions WHERE tenant_id = :'tenant'
GROUP BY status ORDER BY sessions DESC;

\echo 'Cost of goods and margin per tool (from the cost model)'
SELECT coalesce(tool_name, '-') AS tool, count(*) AS calls,
       to_char(sum(price_nano) / 1e9, 'FM999G990D0000') AS price,
       to_char(sum(cogs_nano) / 1e9, 'FM999G990D0000') AS cogs,
       to_char(sum(margin_nano) / 1e9, 'FM999G990D0000') AS margin,
       CASE WHEN sum(price_nano) = 0 THEN '-'
            ELSE to_char(100.0 * sum(margin_nano) / sum(price_nano), 'FM990D0') || '%' END AS margin_pct
FROM cogs_ledger WHERE tenant_id = :'tenant'
GROUP BY tool_name ORDER BY sum(price_nano) DESC LIMIT 12;
SQL

CH_URL=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
CH_DB=${CLICKHOUSE_DATABASE:-agentmeter}
if rows=$(curl -fsS -m 5 "$CH_URL/" --data-binary "SELECT count() FROM $CH_DB.invocations FINAL WHERE tenant_id = '${TENANT//\'/}'" 2>/dev/null); then
  say "ClickHouse analytics rows for the tenant ($CH_DB.invocations): $rows"
fi

step "done"
cat <<EOF
The demo tenant's tokens, API keys and client ids: $SEED_FILE
Look around:
  $BASE_URL/console   the web console (while the pipeline runs: --keep); sign in with the
                      admin token: node -e 'console.log(require("./$SEED_FILE").admin_token)'
  npm run reconcile                  ClickHouse and its rollups against the ledger, per tenant and day
  npm run status                     streams, lag, consumers, dead letters, rejected events
  npm run dlq -- rejected list       the events the pipeline refused (the demo sends a few with unknown keys)
  psql $DATABASE_URL
EOF
if [ "$KEEP" = 1 ]; then
  STARTED_HERE=0
  cat <<EOF

The pipeline keeps running (pid $(pipeline_pid || true), logs in $LOG_FILE). Send more:
  npm run demo-traffic -- --demo $SEED_FILE --duration 60
Stop it with:
  npm run demo -- --stop
EOF
elif [ "$STARTED_HERE" = 1 ]; then
  stop_pipeline
  STARTED_HERE=0
  echo "Run 'npm run demo -- --keep' to leave the pipeline running after the demo."
elif [ -n "$(pipeline_pid)" ]; then
  echo
  echo "The pipeline an earlier --keep run started is still running (pid $(pipeline_pid)); stop it with: npm run demo -- --stop"
else
  echo
  echo "The agentmeter API at $BASE_URL was running before this demo and is left as it was."
fi
