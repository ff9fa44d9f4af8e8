import { readFileSync } from 'node:fs';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import type { Redis } from '../../pipeline/redis.js';
import { z } from 'zod';
import { formatNano } from '../../domain/money.js';
import type { Config } from '../../pipeline/config.js';
import type { Logger } from '../../pipeline/logger.js';
import { projectPath } from '../../pipeline/paths.js';
import { describeIssues } from '../../domain/validation.js';
import { adminTokenStillValid, ConsoleSessions } from '../../store/console-sessions.js';
import { ANALYTICS_QUERIES, runAnalyticsQuery, type AnalyticsQuery } from '../../store/analytics-queries.js';
import { CLICKHOUSE_TIME_LIMIT_MS, CLICKHOUSE_TIMES, connectClickHouse, type ClickHouseClient } from '../../store/clickhouse.js';
import { draftInvoice } from '../../store/invoices.js';
import { liftPause } from '../../store/pause-flags.js';
import type { Sql } from '../../pipeline/postgres.js';
import { PlanCache } from '../../store/rate-plans.js';
import { ApiError, notFound, refusalOf, validationFailed } from '../errors.js';
import { parseQuery } from '../http.js';
import type { TenantTokens } from '../../store/tenant-tokens.js';
import { cachedDirectory, CHART_RANGES, loadOverview, loadSpendList, SPEND_KINDS, type ChartRange, type ConsoleStores, type SpendKind } from './data.js';
import type { Html } from './html.js';
import { errorPage, invoiceFragment, layout, loginPage, overviewFragment, spendListFragment, type InvoiceView } from './views.js';

export interface ConsoleDeps {
  config: Config;
  sql: Sql;
  redis: Redis;
  tokens: TenantTokens;
  log: Logger;
  /** Defaults to a client of CLICKHOUSE_URL / CLICKHOUSE_DATABASE. */
  clickhouse?: ClickHouseClient;
  plans?: PlanCache;
  /** How long a console session lasts from sign-in, in seconds (12 hours). */
  sessionSeconds?: number;
}

type ConsoleEnv = { Variables: { tenantId: string; tokenId: string } };

const CONSOLE_COOKIE = 'am_console';
const SESSION_SECONDS = 12 * 3600;
/** The times ClickHouse can hold (the console passes whole seconds, rounded down). */
const EARLIEST_MS = 0;
const LATEST_MS = CLICKHOUSE_TIME_LIMIT_MS - 1;
/** The widest range the usage API answers in one request: a few months of daily rows, never a table scan. */
const MAX_RANGE_DAYS = { hourly: 31, daily: 400 } as const;
const DAY_MS = 86_400_000;

const STATIC_FILES: Record<string, { path: string; type: string }> = {
  'console.js': { path: projectPath('api', 'console', 'static', 'console.js'), type: 'text/javascript; charset=utf-8' },
  'console.css': { path: projectPath('api', 'console', 'static', 'console.css'), type: 'text/css; charset=utf-8' },
  'uPlot.iife.min.js': { path: projectPath('node_modules', 'uplot', 'dist', 'uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  'uPlot.min.css': { path: projectPath('node_modules', 'uplot', 'dist', 'uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

const usageQuerySchema = z.strictObject({
  query: z.enum(Object.values(ANALYTICS_QUERIES).map((q) => q.id) as [string, ...string[]]),
  from: z.iso.datetime({ offset: true }),
  to: z.iso.datetime({ offset: true }),
});

const liftSchema = z.strictObject({
  cap_id: z.string().min(1).max(128),
  scope_id: z.string().min(1).max(256),
  period_key: z.string().min(1).max(300),
});

const page = (c: Context, body: Html, status: 200 | 400 | 401 | 404 | 500 = 200) => c.html(body.text, status);

/**
 * The web console under /console: server-rendered pages for a tenant's admin (overview with
 * spend, caps, chart, tools, sessions, pauses and pipeline health; a customer's current invoice),
 * refreshed by polling their fragments, and a small JSON API (usage by query and range, lifting
 * a pause). Signing in takes the admin token and starts a session (ConsoleSessions: in Redis, 12
 * hours, ended by signing out or by the retirement of the token it was signed in with), whose
 * random id is the HttpOnly, SameSite=Strict cookie; a bearer header with the admin token works
 * too. Everything is scoped to the token's tenant: another tenant's ids are 404.
 */
export function createConsoleRoutes(deps: ConsoleDeps): Hono<ConsoleEnv> {
  const { config, sql, redis, tokens, log } = deps;
  const clickhouse =
    deps.clickhouse ??
    connectClickHouse({ url: config.CLICKHOUSE_URL, database: config.CLICKHOUSE_DATABASE, username: config.CLICKHOUSE_USER, password: config.CLICKHOUSE_PASSWORD });
  const plans = deps.plans ?? new PlanCache(sql);
  const stores: ConsoleStores = { sql, redis, clickhouse, place: { prefix: config.REDIS_PREFIX, partitions: config.PARTITIONS }, directory: cachedDirectory(sql) };
  const statics = new Map(Object.entries(STATIC_FILES).map(([name, file]) => [name, { body: readFileSync(file.path), type: file.type }]));
  const sessions = new ConsoleSessions(redis, config.REDIS_PREFIX, deps.sessionSeconds ?? SESSION_SECONDS);
  const app = new Hono<ConsoleEnv>();

  app.get('/console/static/:file', (c) => {
    const file = statics.get(c.req.param('file'));
    if (!file) return c.text('not found', 404);
    return c.body(new Uint8Array(file.body), 200, { 'content-type': file.type, 'cache-control': 'public, max-age=300' });
  });
  app.get('/console/login', (c) => page(c, loginPage()));
  app.post('/console/login', bodyLimit({ maxSize: 4096, onError: (c) => page(c, loginPage('That request is too large.'), 400) }), async (c) => {
    const form = await c.req.parseBody();
    const token = typeof form.token === 'string' ? form.token.trim() : '';
    const verified = token ? await tokens.verify(token) : undefined;
    if (verified?.kind !== 'admin') return page(c, loginPage('That is not a valid admin token (or it was revoked).'), 401);
    // Signing in again replaces the session the browser had.
    const previous = getCookie(c, CONSOLE_COOKIE);
    if (previous) await sessions.end(previous);
    const sessionId = await sessions.start({ tenantId: verified.tenantId, tokenId: verified.tokenId });
    setCookie(c, CONSOLE_COOKIE, sessionId, {
      path: '/console',
      httpOnly: true,
      sameSite: 'Strict',
      secure: new URL(c.req.url).protocol === 'https:' || c.req.header('x-forwarded-proto') === 'https',
      maxAge: sessions.ttlSeconds,
    });
    return c.redirect('/console', 303);
  });
  app.post('/console/logout', async (c) => {
    const sessionId = getCookie(c, CONSOLE_COOKIE);
    if (sessionId) await sessions.end(sessionId);
    deleteCookie(c, CONSOLE_COOKIE, { path: '/console' });
    return c.redirect('/console/login', 303);
  });

  // Everything below needs a session or the tenant's admin token: the login page for a person, 401 JSON for the API.
  app.use('/console/*', async (c, next) => {
    const bearer = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '')?.[1];
    const sessionId = bearer === undefined ? getCookie(c, CONSOLE_COOKIE) : undefined;
    let signedIn: { tenantId: string; tokenId: string } | undefined;
    if (bearer !== undefined) {
      const verified = await tokens.verify(bearer);
      if (verified?.kind === 'admin') signedIn = verified;
    } else if (sessionId) {
      // The session, and the admin token it was signed in with, still valid (a rotation without grace or a revocation ends it).
      const session = await sessions.find(sessionId);
      if (session && (await adminTokenStillValid(sql, session))) signedIn = session;
    }
    if (!signedIn) {
      if (isApi(c)) throw new ApiError(401, 'unauthorized', 'a valid admin token is required: sign in at /console/login or send Authorization: Bearer <admin token>');
      if (sessionId) deleteCookie(c, CONSOLE_COOKIE, { path: '/console' });
      return page(c, loginPage(bearer !== undefined || sessionId ? 'Your session is no longer valid: sign in again with an admin token.' : undefined), 401);
    }
    c.set('tenantId', signedIn.tenantId);
    c.set('tokenId', signedIn.tokenId);
    await next();
  });
  app.get('/console', async (c) => {
    const overview = await loadOverview(stores, c.get('tenantId'), chartRange(c.req.query('range')));
    return page(c, layout('Console', overviewFragment(overview), { tenantId: overview.tenantId, refreshUrl: `/console/fragment?range=${overview.range}`, customers: overview.directory.customers }));
  });
  app.get('/console/fragment', async (c) => {
    const overview = await loadOverview(stores, c.get('tenantId'), chartRange(c.req.query('range')));
    return page(c, overviewFragment(overview));
  });
  app.get('/console/spend/:kind', async (c) => {
    const kind = c.req.param('kind');
    if (!Object.hasOwn(SPEND_KINDS, kind)) throw new ApiError(404, 'not_found', `no spend list by ${kind}: by customer, team or agent`);
    const pageNumber = Number(c.req.query('page') ?? 1);
    if (!Number.isInteger(pageNumber) || pageNumber < 1) throw validationFailed('page must be a whole number from 1', [{ path: 'page', message: 'a whole number from 1' }]);
    const list = await loadSpendList(stores, c.get('tenantId'), kind as SpendKind, pageNumber);
    return page(c, layout(`Spend by ${kind}`, spendListFragment(list), { tenantId: c.get('tenantId'), customers: list.directory.customers }));
  });
  app.get('/console/invoice', (c) => c.redirect(`/console/customers/${encodeURIComponent(c.req.query('customer') ?? '')}`, 303));
  app.get('/console/customers/:id', async (c) => {
    const view = await loadInvoice(stores, plans, c.get('tenantId'), c.req.param('id'));
    return page(c, layout(`Invoice of ${view.customerName}`, invoiceFragment(view), { tenantId: c.get('tenantId'), refreshUrl: `/console/customers/${encodeURIComponent(view.customerId)}/fragment` }));
  });
  app.get('/console/customers/:id/fragment', async (c) => page(c, invoiceFragment(await loadInvoice(stores, plans, c.get('tenantId'), c.req.param('id')))));

  app.get('/console/api/usage', async (c) => {
    const parsed = parseQuery(usageQuerySchema, c.req.query());
    const query: AnalyticsQuery = Object.values(ANALYTICS_QUERIES).find((q) => q.id === parsed.query)!;
    const from = Date.parse(parsed.from);
    const to = Date.parse(parsed.to);
    const outside = [
      ...(from < EARLIEST_MS || from > LATEST_MS ? [{ path: 'from', message: CLICKHOUSE_TIMES }] : []),
      ...(to < EARLIEST_MS || to > LATEST_MS ? [{ path: 'to', message: CLICKHOUSE_TIMES }] : []),
    ];
    if (outside.length > 0) throw validationFailed(`invalid range: ${outside[0].path}: ${CLICKHOUSE_TIMES}`, outside);
    // In whole seconds, as ClickHouse reads them: within one second the range would be empty, and its end minus one second before 1970.
    if (Math.floor(from / 1000) >= Math.floor(to / 1000)) throw validationFailed('from must be at least a second before to', [{ path: 'from', message: 'must be at least a second before to' }]);
    const hourly = query.sql.includes('FROM usage_hourly');
    const maxDays = hourly ? MAX_RANGE_DAYS.hourly : MAX_RANGE_DAYS.daily;
    if (to - from > maxDays * DAY_MS) {
      throw validationFailed(`the range is too wide: at most ${maxDays} days for ${query.id}; ask for it in parts`, [
        { path: 'to', message: `at most ${maxDays} days after from` },
      ]);
    }
    const rows = await runAnalyticsQuery(clickhouse, query, { tenantId: c.get('tenantId'), from, to });
    return c.json({
      query: query.id,
      from: new Date(from).toISOString(),
      to: new Date(to).toISOString(),
      money: 'decimal strings in the currency (exact); counts as strings',
      rows: rows.map((row) =>
        Object.fromEntries(
          Object.entries(row).map(([name, value]) => [
            name,
            query.columns[name] === 'money' ? formatNano(value as bigint) : value instanceof Date ? value.toISOString() : typeof value === 'bigint' ? value.toString() : value,
          ]),
        ),
      ),
    });
  });
  app.post('/console/api/pauses/lift', bodyLimit({ maxSize: 4096, onError: () => { throw new ApiError(413, 'payload_too_large', 'the request body exceeds 4096 bytes'); } }), async (c) => {
    // JSON only: a form posted from another site cannot send it (and the cookie is SameSite=Strict).
    if (!(c.req.header('content-type') ?? '').startsWith('application/json')) {
      throw new ApiError(415, 'unsupported_media_type', 'send the pause as JSON: {"cap_id", "scope_id", "period_key"}');
    }
    const body = await c.req.json().catch(() => {
      throw validationFailed('the body is not valid JSON');
    });
    const parsed = liftSchema.safeParse(body);
    if (!parsed.success) throw validationFailed('invalid pause', describeIssues(parsed.error));
    const tenantId = c.get('tenantId');
    const lifted = await liftPause(
      sql,
      redis,
      stores.place,
      tenantId,
      { capId: parsed.data.cap_id, scopeId: parsed.data.scope_id, periodKey: parsed.data.period_key },
      { by: 'admin', tokenId: c.get('tokenId') },
    );
    if (!lifted) throw notFound('pause', `${parsed.data.cap_id}/${parsed.data.scope_id}/${parsed.data.period_key}`);
    log.info({ tenantId, ...parsed.data, flagDeleted: lifted.flagDeleted }, 'console: pause lifted');
    return c.json({
      scope_kind: lifted.scopeKind,
      scope_id: lifted.scopeId,
      flag_deleted: lifted.flagDeleted,
      records_lifted: lifted.recordsLifted,
      lifted_at: lifted.liftedAt.toISOString(),
    });
  });

  app.onError((err, c) => {
    const refusal = refusalOf(err);
    if (!refusal) log.error({ err, method: c.req.method, path: c.req.path }, 'console: unexpected error');
    const status = refusal?.status ?? 500;
    const message = refusal?.message ?? 'an unexpected error occurred; it has been logged';
    if (isApi(c)) return c.json((refusal ?? new ApiError(500, 'internal', message)).body(), status);
    return page(c, errorPage(status, message, c.get('tenantId')), status as 400 | 401 | 404 | 500);
  });
  return app;
}

const isApi = (c: Context) => c.req.path.startsWith('/console/api/');

function chartRange(value: string | undefined): ChartRange {
  if (value === undefined) return '24h';
  if (Object.hasOwn(CHART_RANGES, value)) return value as ChartRange;
  throw validationFailed(`range must be one of ${Object.keys(CHART_RANGES).join(', ')}`, [{ path: 'range', message: 'unknown range' }]);
}

async function loadInvoice(stores: ConsoleStores, plans: PlanCache, tenantId: string, customerId: string): Promise<InvoiceView> {
  const [customer] = await stores.sql<{ id: string; name: string }[]>`SELECT id, name FROM customers WHERE tenant_id = ${tenantId} AND id = ${customerId}`;
  if (!customer) throw notFound('customer', customerId);
  const now = Date.now();
  const draft = await draftInvoice(stores.sql, plans, tenantId, customerId, now);
  if (!draft) throw new ApiError(404, 'no_subscription', `customer ${customerId} has no subscription this month`);
  return { customerId, customerName: customer.name, periodStart: draft.periodStart, periodEnd: draft.periodEnd, invoice: draft.invoice, now };
}
