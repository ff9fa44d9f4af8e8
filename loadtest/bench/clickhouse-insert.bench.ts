// npm run bench:clickhouse [-- --rows 200000 --batch 5000 --rounds 3 --formats json,json-client,tsv,csv,rowbinary,json-bare,tsv-bare]
// (a format may carry its own batch size and insert settings: --formats json@1000,json,json@20000,json~max_compress_block_size=65536)
//
// What one row inserted into {db}.invocations costs, per insert format: the CPU of the
// ClickHouse server process (utime + stime of /proc/<pid>/stat, read before the first insert,
// when the last insert has returned, and again when the background merges it caused are done)
// and of this Node process (process.cpuUsage: encoding and HTTP), and rows per second. Rows are
// built by invocationRow, the stage's own row code, from a varied event mix (tenants, customers
// of skewed size, agents, apps, Zipf-popular tools, models, sessions, errors, session events).
// Every run inserts the same rows into freshly truncated tables of a private database (migrated
// as the pipeline migrates; dropped at the end); formats run alternately, round after round, as
// the box's speed drifts. "-bare" inserts into a copy of invocations without the materialized
// views, to show what the rollups cost. Run it alone: `/work/wt/cpu bench npm run bench:clickhouse`.
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { seededRandom } from '../../ops/demo-traffic.js';
import { loadConfig } from '../../pipeline/config.js';
import { INVOCATION_COLUMNS, invocationRow, type InvocationRow } from '../../stages/analytics-dispatch/rows.js';
import { ledgeredEvent } from '../../stages/testing.js';
import { connectClickHouse, insertJsonRows, type ClickHouseClient } from '../../store/clickhouse.js';
import { migrateClickHouse } from '../../store/migrate.js';
import { API_ENDPOINTS, MCP_TOOLS, MODELS, Zipf } from './events.js';
import { processTimes } from './sampler.js';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '200000' },
    batch: { type: 'string', default: '5000' },
    rounds: { type: 'string', default: '3' },
    formats: { type: 'string', default: 'json,tsv,csv,rowbinary,json-bare,tsv-bare' },
    'merge-timeout': { type: 'string', default: '120' },
    /** Whole rounds run first and not counted: the server's memory and the box's caches warm up. */
    'warmup-rounds': { type: 'string', default: '1' },
  },
});
const ROWS = Number(args.rows);
const BATCH = Number(args.batch);
const ROUNDS = Number(args.rounds);
const FORMATS = args.formats.split(',');
const MERGE_TIMEOUT_MS = Number(args['merge-timeout']) * 1000;
const WARMUP_ROUNDS = Number(args['warmup-rounds']);

// ---- the rows -------------------------------------------------------------------------------

const HOSTILE = ['tab\there', 'line\nfeed', 'cr\r\nlf', 'back\\slash \\N \\t', `quotes "double" 'single'`, 'nul\0 bs\b ff\f', 'ünïcödé ✓ 😀 中文', 'comma, semi; "x",y'];
const FAILURES = [
  ['FAILED', 'UpstreamError'],
  ['FAILED', 'ValidationError'],
  ['TIMEOUT', 'Timeout'],
  ['RATE_LIMITED', 'RateLimited'],
] as const;

function makeRows(count: number): InvocationRow[] {
  const random = seededRandom(7);
  const token = (n: number) => Array.from({ length: n }, () => 'abcdefghijklmnopqrstuvwxyz0123456789'[Math.floor(random() * 36)]).join('');
  const id = (prefix: string) => `${prefix}_${token(20)}`;
  const tenants = Array.from({ length: 3 }, () => ({
    tenantId: id('ten'),
    ratePlanId: id('plan'),
    ratePlanVersionId: id('planv'),
    products: Array.from({ length: 4 }, () => id('prd')),
    customers: Array.from({ length: 100 }, () => ({
      customerId: id('cus'),
      subscriptionId: id('sub'),
      teams: Array.from({ length: 2 }, () => ({ teamId: id('team'), agents: Array.from({ length: 3 }, () => ({ agentId: id('agt'), keyId: id('key') })) })),
      apps: Array.from({ length: 2 }, () => ({ appId: id('app'), keyId: id('key') })),
    })),
  }));
  const tenantZipf = new Zipf(tenants.length, 1);
  const customerZipf = new Zipf(100, 0.9);
  const toolZipf = new Zipf(MCP_TOOLS.length, 1.2);
  const endpointZipf = new Zipf(API_ENDPOINTS.length, 1.2);
  const start = Date.UTC(2026, 10, 30, 12, 0, 0);
  const rows: InvocationRow[] = [];
  let session = id('sess');
  for (let i = 0; i < count; i++) {
    const tenant = tenants[tenantZipf.sample(random)];
    const customer = tenant.customers[customerZipf.sample(random)];
    const recordedAt = start + i * 5 + Math.floor(random() * 1000);
    const failure = random() < 0.04 ? FAILURES[Math.floor(random() * FAILURES.length)] : undefined;
    // Now and then an error text that no encoder may mangle (every format must store the same rows).
    const errorType: string | undefined = i % 997 === 0 ? HOSTILE[(i / 997) % HOSTILE.length] : failure?.[1];
    const common = {
      tenantId: tenant.tenantId,
      eventId: `evt_${token(24)}`,
      recordedAt,
      ingestedAt: recordedAt + 50 + Math.floor(random() * 2000),
      durationMs: Math.floor(random() * 3000),
      status: failure?.[0] ?? 'SUCCESS',
      errorType,
      retryCount: random() < 0.05 ? 1 : 0,
      isParallel: random() < 0.1,
      subscription: { subscriptionId: customer.subscriptionId, ratePlanId: tenant.ratePlanId, ratePlanVersionId: tenant.ratePlanVersionId, ratePlanVersion: 3 },
    } as const;
    const cogs = BigInt(Math.floor(random() * 5_000_000));
    if (random() < 0.3) {
      const app = customer.apps[Math.floor(random() * customer.apps.length)];
      const endpoint = API_ENDPOINTS[endpointZipf.sample(random)];
      const event = ledgeredEvent({
        ...common,
        eventType: 'api.request',
        sessionId: undefined,
        toolName: endpoint,
        mcpServerId: undefined,
        model: random() < 0.3 ? MODELS[Math.floor(random() * MODELS.length)] : undefined,
        inputTokens: Math.floor(random() * 4000),
        outputTokens: Math.floor(random() * 800),
        attribution: { customerId: customer.customerId, teamId: customer.teams[0].teamId, agentId: undefined, appId: app.appId, credentialId: app.keyId, productId: tenant.products[0] },
        cost: { total: BigInt(Math.floor(random() * 50_000_000)), tool: endpoint },
      });
      rows.push(invocationRow(event, cogs));
      continue;
    }
    const team = customer.teams[Math.floor(random() * customer.teams.length)];
    const agent = team.agents[Math.floor(random() * team.agents.length)];
    if (random() < 0.08) session = id('sess');
    const control = random() < 0.06;
    const tool = MCP_TOOLS[toolZipf.sample(random)];
    const event = ledgeredEvent({
      ...common,
      eventType: control ? 'session.completed' : 'mcp.tool_invoked',
      sessionId: session,
      toolName: control ? undefined : tool,
      mcpServerId: control ? undefined : `mcp-${tenant.customers.indexOf(customer) % 7}`,
      model: control ? undefined : MODELS[Math.floor(random() * MODELS.length)],
      inputTokens: control ? 0 : Math.floor(random() * 6000),
      outputTokens: control ? 0 : Math.floor(random() * 1200),
      attribution: { customerId: customer.customerId, teamId: team.teamId, agentId: agent.agentId, credentialId: agent.keyId, productId: tenant.products[3] },
      cost: { total: control ? 0n : BigInt(Math.floor(random() * 50_000_000)), tool: control ? '' : tool },
    });
    rows.push(invocationRow(event, control ? 0n : cogs));
  }
  return rows;
}

// ---- the encoders other than JSONEachRow (the stage's) ---------------------------------------



/** The characters ClickHouse's TabSeparated reader takes as syntax or that a line-based tool could mangle. */
const SPECIAL = /[\\\t\n\r\0\b\f]/;
const SPECIAL_ALL = /[\\\t\n\r\0\b\f]/g;
const ESCAPED: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', '\0': '\\0', '\b': '\\b', '\f': '\\f' };

/**
 * A String field in ClickHouse's TabSeparated escaping (the same on 18.16 and current releases):
 * backslash, tab and line feed (the format's own syntax) and CR, NUL, backspace and form feed
 * become backslash sequences; every other character, non-ASCII included, is written as it is
 * (UTF-8 on the wire).
 */
function tsvString(value: string): string {
  return SPECIAL.test(value) ? value.replace(SPECIAL_ALL, (c) => ESCAPED[c]) : value;
}

/**
 * The rows as the body of `INSERT INTO invocations (INVOCATION_COLUMNS) FORMAT TabSeparated`:
 * one line per row, fields in INVOCATION_COLUMNS order, numbers and 64-bit decimal strings as
 * their text, times as the row's 'YYYY-MM-DD hh:mm:ss'.
 */
function invocationsTabSeparated(rows: readonly InvocationRow[]): string {
  let out = '';
  for (const r of rows) {
    out +=
      `${tsvString(r.tenant_id)}\t${tsvString(r.event_id)}\t${tsvString(r.event_type)}\t${tsvString(r.customer_id)}\t` +
      `${tsvString(r.team_id)}\t${tsvString(r.agent_id)}\t${tsvString(r.app_id)}\t${tsvString(r.credential_id)}\t` +
      `${tsvString(r.product_id)}\t${tsvString(r.session_id)}\t${tsvString(r.tool_name)}\t${tsvString(r.priced_tool)}\t` +
      `${tsvString(r.mcp_server_id)}\t${tsvString(r.model)}\t${tsvString(r.execution_status)}\t${tsvString(r.error_type)}\t` +
      `${r.duration_ms}\t${r.input_tokens}\t${r.output_tokens}\t${r.total_tokens}\t${r.retry_count}\t${r.is_parallel}\t` +
      `${tsvString(r.cost_nano)}\t${tsvString(r.cogs_nano)}\t${tsvString(r.currency)}\t${r.over_cap}\t` +
      `${tsvString(r.subscription_id)}\t${tsvString(r.rate_plan_id)}\t${tsvString(r.rate_plan_version_id)}\t${r.rate_plan_version}\t` +
      `${tsvString(r.recorded_at)}\t${tsvString(r.recorded_date)}\t${tsvString(r.ingested_at)}\n`;
  }
  return out;
}


/** CSV: every String quoted with double quotes (doubled inside), numbers bare. */
function csv(rows: readonly InvocationRow[]): string {
  const q = (s: string) => (s.includes('"') ? `"${s.replaceAll('"', '""')}"` : `"${s}"`);
  let out = '';
  for (const r of rows) {
    out += INVOCATION_COLUMNS.map((c) => (typeof r[c] === 'number' ? String(r[c]) : q(r[c] as string))).join(',');
    out += '\n';
  }
  return out;
}

type Kind = 'String' | 'Int64' | 'UInt32' | 'UInt8' | 'DateTime' | 'Date';
const KINDS: Record<(typeof INVOCATION_COLUMNS)[number], Kind> = Object.fromEntries(
  INVOCATION_COLUMNS.map((c) => [c, 'String' as Kind]),
) as Record<(typeof INVOCATION_COLUMNS)[number], Kind>;
Object.assign(KINDS, {
  duration_ms: 'Int64', input_tokens: 'Int64', output_tokens: 'Int64', total_tokens: 'Int64', retry_count: 'UInt32',
  is_parallel: 'UInt8', cost_nano: 'Int64', cogs_nano: 'Int64', over_cap: 'UInt8', rate_plan_version: 'UInt32',
  recorded_at: 'DateTime', recorded_date: 'Date', ingested_at: 'DateTime',
});

/** RowBinary: the column types of invocations after migration 005 (a schema change breaks it silently). */
function rowBinary(rows: readonly InvocationRow[]): Buffer {
  let buf = Buffer.allocUnsafe(rows.length * 600);
  let off = 0;
  const ensure = (n: number) => {
    if (off + n <= buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(buf.length * 2, off + n));
    buf.copy(bigger, 0, 0, off);
    buf = bigger;
  };
  for (const r of rows) {
    for (const c of INVOCATION_COLUMNS) {
      const v = r[c];
      switch (KINDS[c]) {
        case 'String': {
          const s = v as string;
          ensure(s.length * 3 + 5);
          const n = buf.write(s, off + 1, 'utf8');
          if (n < 128) {
            buf[off] = n;
            off += 1 + n;
          } else {
            let len = 0;
            for (let x = n; x >= 128; x >>>= 7) len++;
            buf.copyWithin(off + len + 1, off + 1, off + 1 + n);
            let x = n;
            while (x >= 128) {
              buf[off++] = (x & 0x7f) | 0x80;
              x >>>= 7;
            }
            buf[off++] = x;
            off += n;
          }
          break;
        }
        case 'Int64':
          ensure(8);
          off = buf.writeBigInt64LE(BigInt(v), off);
          break;
        case 'UInt32':
          ensure(4);
          off = buf.writeUInt32LE(v as number, off);
          break;
        case 'UInt8':
          ensure(1);
          off = buf.writeUInt8(v as number, off);
          break;
        case 'DateTime':
          ensure(4);
          off = buf.writeUInt32LE(Date.parse(`${(v as string).replace(' ', 'T')}Z`) / 1000, off);
          break;
        case 'Date':
          ensure(2);
          off = buf.writeUInt16LE(Date.parse(`${v as string}T00:00:00Z`) / 86_400_000, off);
          break;
      }
    }
  }
  return buf.subarray(0, off);
}

const rawBody = (body: string | Buffer) => Readable.from([body], { objectMode: false });

async function insert(ch: ClickHouseClient, format: string, table: string, rows: InvocationRow[], queryId?: string, settings: Record<string, string> = {}): Promise<void> {
  const columns: [string, ...string[]] = [...INVOCATION_COLUMNS];
  // Logged in system.query_log, whose ProfileEvents give the CPU of this insert alone (its views included).
  const logged = queryId ? { query_id: queryId, clickhouse_settings: { ...settings, log_queries: 1 as const } } : { clickhouse_settings: settings };
  switch (format) {
    case 'json':
      // As analytics-dispatch inserts: the body streamed in chunks of about 64 KiB.
      await insertJsonRows(ch, table, rows, logged);
      return;
    case 'json-client':
      // The client's own insert: every row joined into one string, encoded whole.
      await ch.insert({ table, values: rows, format: 'JSONEachRow', ...logged });
      return;
    case 'tsv':
      await ch.insert({ table, columns, values: rawBody(invocationsTabSeparated(rows)), format: 'TabSeparated', ...logged });
      return;
    case 'csv':
      await ch.insert({ table, columns, values: rawBody(csv(rows)), format: 'CSV', ...logged });
      return;
    case 'rowbinary': {
      // Not among the client's insert formats (1.23): the whole INSERT through exec.
      const result = await ch.exec({ query: `INSERT INTO ${table} (${columns.join(', ')}) FORMAT RowBinary`, values: rawBody(rowBinary(rows)), ...logged });
      result.stream.resume();
      await new Promise((resolve) => result.stream.on('end', resolve).on('close', resolve));
      return;
    }
    default:
      throw new Error(`unknown format ${format}`);
  }
}

// ---- the measuring -----------------------------------------------------------------------------

function clickHousePid(): number {
  if (process.env.CLICKHOUSE_PID) return Number(process.env.CLICKHOUSE_PID);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === 'clickhouse-serv') return Number(entry);
    } catch {
      // gone in between
    }
  }
  throw new Error('no clickhouse-server process found (set CLICKHOUSE_PID)');
}

const processCpuUs = (pid: number) => {
  const t = processTimes(pid);
  return t.user + t.system;
};

const nodeCpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

async function mergesRunning(ch: ClickHouseClient, db: string): Promise<number> {
  const result = await ch.query({ query: `SELECT count() AS n FROM system.merges WHERE database = '${db}'`, format: 'JSONEachRow' });
  return Number((await result.json<{ n: string }>())[0].n);
}

/** User + system CPU of the logged inserts whose query_id starts with tag (threads of the query, views included). */
async function loggedCpuUs(ch: ClickHouseClient, tag: string): Promise<number> {
  await ch.command({ query: 'SYSTEM FLUSH LOGS' });
  const result = await ch.query({
    query: `SELECT toString(sum(ProfileEvents.Values[indexOf(ProfileEvents.Names, 'UserTimeMicroseconds')] + ProfileEvents.Values[indexOf(ProfileEvents.Names, 'SystemTimeMicroseconds')])) AS us, count() AS n
      FROM system.query_log WHERE type = 2 AND substring(query_id, 1, ${tag.length + 1}) = '${tag}/'`,
    format: 'JSONEachRow',
  });
  const [row] = await result.json<{ us: string; n: string }>();
  return Number(row.us);
}

async function settle(ch: ClickHouseClient, db: string): Promise<void> {
  const until = Date.now() + MERGE_TIMEOUT_MS;
  let quiet = 0;
  while (Date.now() < until && quiet < 3) {
    await new Promise((r) => setTimeout(r, 250));
    quiet = (await mergesRunning(ch, db)) === 0 ? quiet + 1 : 0;
  }
}

interface Run {
  format: string;
  round: number;
  rowsPerSec: number;
  chInsertUs: number;
  chTotalUs: number;
  /** The inserts' own threads, from system.query_log: not disturbed by whatever else the server does meanwhile. */
  chQueryUs: number;
  /** The kernel's share of chInsertUs (page faults, network). */
  chSystemUs: number;
  /** Minor page faults of the server per row while inserting. */
  chFaults: number;
  nodeUs: number;
}

async function main(): Promise<void> {
  const config = loadConfig(process.env);
  const db = `am_b_chinsert_${randomBytes(4).toString('hex')}`;
  const settings = { url: config.CLICKHOUSE_URL, database: db, username: config.CLICKHOUSE_USER, password: config.CLICKHOUSE_PASSWORD, requestTimeoutMs: 180_000 };
  await migrateClickHouse(settings);
  const ch = connectClickHouse(settings);
  const pid = clickHousePid();
  const tables = ['invocations', 'usage_hourly', 'usage_daily', 'spend_daily', 'tool_daily', 'session_summary', 'invocations_bare'];
  try {
    await ch.command({ query: `CREATE TABLE ${db}.invocations_bare AS ${db}.invocations` });
    const t0 = performance.now();
    const rows = makeRows(ROWS);
    console.log(`${ROWS} rows built in ${Math.round(performance.now() - t0)} ms; ${Buffer.byteLength(invocationsTabSeparated(rows.slice(0, 1000))) / 1000} B/row as TSV, ${Buffer.byteLength(rows.slice(0, 1000).map((r) => `${JSON.stringify(r)}\n`).join('')) / 1000} as JSONEachRow`);
    const idleFrom = processCpuUs(pid);
    await new Promise((r) => setTimeout(r, 3000));
    const idleUsPerSec = (processCpuUs(pid) - idleFrom) / 3;
    console.log(`clickhouse-server pid ${pid}, idle ${Math.round(idleUsPerSec / 1000)} ms CPU/s; db ${db}`);

    const runs: Run[] = [];
    let firstChecksum: string | undefined;
    for (let round = 1 - WARMUP_ROUNDS; round <= ROUNDS; round++) {
      // Each round starts one format later, so that no format always runs first after a pause.
      const order = FORMATS.map((_, i) => FORMATS[(i + Math.max(0, round - 1)) % FORMATS.length]);
      for (const format of order) {
        for (const table of tables) await ch.command({ query: `TRUNCATE TABLE ${db}.${table}` });
        await settle(ch, db);
        // A format may name its own batch size: json@20000.
        // ... and settings for its inserts: json~max_compress_block_size=65536;min_compress_block_size=4096
        const [spec, settingsText] = format.split('~');
        const insertSettings = Object.fromEntries((settingsText ? settingsText.split(';') : []).map((kv) => kv.split('=')));
        const [name, batchText] = spec.split('@');
        const batch = batchText ? Number(batchText) : BATCH;
        const table = name.endsWith('-bare') ? 'invocations_bare' : 'invocations';
        const base = name.replace('-bare', '');
        const { user: user0, system: sys0, minorFaults: faults0 } = processTimes(pid);
        const ch0 = user0 + sys0;
        const n0 = nodeCpuUs();
        const w0 = performance.now();
        const tag = `${db}_${round}_${format}`;
        for (let start = 0; start < rows.length; start += batch) await insert(ch, base, table, rows.slice(start, start + batch), `${tag}/${start}`, insertSettings);
        const wall = (performance.now() - w0) / 1000;
        const n1 = nodeCpuUs();
        const { user: user1, system: sys1, minorFaults: faults1 } = processTimes(pid);
        const ch1 = user1 + sys1;
        await settle(ch, db);
        const ch2 = processCpuUs(pid);
        const count = Number((await (await ch.query({ query: `SELECT count() AS n FROM ${db}.${table}`, format: 'JSONEachRow' })).json<{ n: string }>())[0].n);
        if (count !== rows.length) throw new Error(`${format}: ${count} rows in ${table}, expected ${rows.length}`);
        // Every format stores exactly the same rows: a checksum over every column.
        const sumResult = await ch.query({ query: `SELECT toString(sum(cityHash64(${INVOCATION_COLUMNS.join(', ')}))) AS h FROM ${db}.${table}`, format: 'JSONEachRow' });
        const checksum = (await sumResult.json<{ h: string }>())[0].h;
        if (firstChecksum === undefined) firstChecksum = checksum;
        else if (checksum !== firstChecksum) throw new Error(`${format}: the rows stored differ from the first run's (checksum ${checksum}, expected ${firstChecksum})`);
        const queryUs = await loggedCpuUs(ch, tag);
        const run: Run = { format, round, rowsPerSec: rows.length / wall, chInsertUs: (ch1 - ch0) / rows.length, chTotalUs: (ch2 - ch0) / rows.length, chQueryUs: queryUs / rows.length, chSystemUs: (sys1 - sys0) / rows.length, chFaults: (faults1 - faults0) / rows.length, nodeUs: (n1 - n0) / rows.length };
        if (round >= 1) runs.push(run);
        console.log(
          `${round >= 1 ? `round ${round}` : 'warm-up'} ${format.padEnd(12)} ${Math.round(run.rowsPerSec).toString().padStart(7)} rows/s  ClickHouse ${run.chInsertUs.toFixed(1).padStart(5)} µs/row (${run.chSystemUs.toFixed(1)} system, ${run.chFaults.toFixed(2)} faults/row; ${run.chTotalUs.toFixed(1)} with merges; ${run.chQueryUs.toFixed(1)} in query_log)  Node ${run.nodeUs.toFixed(1).padStart(5)} µs/row`,
        );
      }
    }
    console.log(`\nmean of ${ROUNDS} rounds, ${ROWS} rows in batches of ${BATCH}:`);
    console.log('format      rows/s   CH µs/row  CH+merges  CH query_log  Node µs/row  CH+merges+Node');
    for (const format of FORMATS) {
      const mine = runs.filter((r) => r.format === format);
      const mean = (f: (r: Run) => number) => mine.reduce((s, r) => s + f(r), 0) / mine.length;
      console.log(
        `${format.padEnd(12)} ${Math.round(mean((r) => r.rowsPerSec)).toString().padStart(7)}   ${mean((r) => r.chInsertUs).toFixed(1).padStart(8)}  ${mean((r) => r.chTotalUs).toFixed(1).padStart(9)}  ${mean((r) => r.chQueryUs).toFixed(1).padStart(12)}  ${mean((r) => r.nodeUs).toFixed(1).padStart(11)}  ${mean((r) => r.chTotalUs + r.nodeUs).toFixed(1).padStart(14)}`,
      );
    }
  } finally {
    await ch.close();
    const dropper = connectClickHouse(settings);
    await dropper.command({ query: `DROP DATABASE IF EXISTS ${db}` }).finally(() => dropper.close());
  }
}

await main();
