import { formatMoney, formatPercent } from '../../domain/money-format.js';
import { formatNano, parseNano } from '../../domain/money.js';
import type { Invoice } from '../../domain/rating/rate-period.js';
import type { AnalyticsRow } from '../../store/analytics-queries.js';
import type { CapStatus, Directory, SessionView } from '../../store/console.js';
import type { PauseView } from '../../store/pause-flags.js';
import { OVERVIEW_ROWS, type ChartRange, type Overview, type SpendKind, type SpendList, type SpendRow } from './data.js';
import { html, jsonScript, type Html } from './html.js';

/** Server-rendered pages of the console. Each figure carries its exact value (data-nano) beside the formatted one. */

const iso = (d: Date | number) => new Date(d).toISOString().replace('T', ' ').slice(0, 19) + ' UTC';
const count = (n: bigint | number) => new Intl.NumberFormat('en-US').format(n);

function money(nano: bigint, currency: string, figure?: string, key?: string): Html {
  if (!currency) return html`<span class="money">-</span>`;
  return html`<span class="money" data-figure="${figure}" data-key="${key}" data-currency="${currency}" data-nano="${nano.toString()}">${formatMoney(nano, currency)}</span>`;
}

export function layout(title: string, body: Html, options: { tenantId?: string; refreshUrl?: string; customers?: Directory['customers'] } = {}): Html {
  const customers = options.customers ? [...options.customers] : [];
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · agentmeter</title>
<link rel="stylesheet" href="/console/static/uPlot.min.css">
<link rel="stylesheet" href="/console/static/console.css">
</head>
<body data-refresh-url="${options.refreshUrl}" data-refresh-ms="5000">
<header class="top">
  <a class="brand" href="/console">agentmeter</a>
  ${options.tenantId ? html`<span class="tenant">tenant ${options.tenantId}</span>` : ''}
  ${customers.length
    ? html`<form class="jump" method="get" action="/console/invoice"><label>Invoice of <select name="customer">${customers.map(
        ([id, name]) => html`<option value="${id}">${name}</option>`,
      )}</select></label> <button>Open</button></form>`
    : ''}
  ${options.tenantId ? html`<form method="post" action="/console/logout"><button class="link">Sign out</button></form>` : ''}
</header>
<main id="live">${body}</main>
<script src="/console/static/uPlot.iife.min.js"></script>
<script src="/console/static/console.js"></script>
</body>
</html>`;
}

export function loginPage(message?: string): Html {
  return layout(
    'Sign in',
    html`<section class="login">
  <h1>agentmeter console</h1>
  <p>Sign in with your tenant's <b>admin token</b> (<code>amt_...</code>, from <code>npm run seed-demo</code> or the admin API).</p>
  ${message ? html`<p class="error" role="alert">${message}</p>` : ''}
  <form method="post" action="/console/login">
    <label>Admin token <input type="password" name="token" autocomplete="off" required autofocus></label>
    <button type="submit">Sign in</button>
  </form>
</section>`,
  );
}

export function errorPage(status: number, message: string, tenantId?: string): Html {
  return layout(`Error ${status}`, html`<section><h1>${status}</h1><p class="error">${message}</p><p><a href="/console">Back to the overview</a></p></section>`, { tenantId });
}

/** A half-circle gauge of spent / limit (a cap), the share written under it. */
function gauge(cap: CapStatus, currency: string): Html {
  if (cap.spentNano === null) {
    return html`<div class="cap"><span class="cap-label">${formatMoney(cap.limitNano, currency)} per session (${cap.action})</span></div>`;
  }
  const basisPoints = cap.limitNano === 0n ? 0 : Number((cap.spentNano * 10_000n) / cap.limitNano);
  const share = Math.min(basisPoints, 10_000) / 10_000;
  const angle = Math.PI * (1 - share);
  const x = 50 + 40 * Math.cos(angle);
  const y = 50 - 40 * Math.sin(angle);
  const level = basisPoints >= 10_000 ? 'over' : basisPoints >= 8_000 ? 'near' : 'ok';
  return html`<div class="cap ${level}" data-figure="cap" data-key="${cap.id}" data-nano="${cap.spentNano.toString()}" data-limit-nano="${cap.limitNano.toString()}">
  <svg viewBox="0 0 100 56" class="gauge" role="img" aria-label="${formatPercent(cap.spentNano, cap.limitNano)} of the ${cap.period} cap">
    <path d="M10 50 A40 40 0 0 1 90 50" class="track"/>
    ${share > 0 ? html`<path d="M10 50 A40 40 0 0 1 ${x.toFixed(2)} ${y.toFixed(2)}" class="fill"/>` : ''}
    <text x="50" y="48" text-anchor="middle">${formatPercent(cap.spentNano, cap.limitNano)}</text>
  </svg>
  <span class="cap-label">${formatMoney(cap.spentNano, currency)} of ${formatMoney(cap.limitNano, currency)}<br>${cap.period} ${cap.periodKey}, ${cap.action}</span>
</div>`;
}

function kpis(totals: AnalyticsRow[], period: Overview['period']): Html {
  if (totals.length === 0) return html`<section class="kpis"><p class="muted">No usage this month yet.</p></section>`;
  return html`<section class="kpis">${totals.map((t) => {
    const currency = t.currency as string;
    const revenue = t.revenue as bigint;
    const margin = t.margin as bigint;
    const calls = t.call_count as bigint;
    return html`<div class="kpi-row">
  <div class="kpi"><h3>Revenue this month (${currency})</h3>${money(revenue, currency, 'total-revenue', currency)}</div>
  <div class="kpi"><h3>Cost of goods</h3>${money(t.cogs_total as bigint, currency, 'total-cogs', currency)}</div>
  <div class="kpi"><h3>Margin</h3>${money(margin, currency, 'total-margin', currency)} <small>${formatPercent(margin, revenue) ?? ''}</small></div>
  <div class="kpi"><h3>Calls</h3><span data-figure="total-calls" data-key="${currency}" data-count="${calls.toString()}">${count(calls)}</span></div>
  <div class="kpi"><h3>Error rate</h3><span>${formatPercent(t.error_count as bigint, calls) ?? '-'}</span></div>
</div>`;
  })}<p class="muted">Month to date: ${iso(period.start)} to now. Spend is what the events were rated at (the ledger), before period rules.</p></section>`;
}

function nameOf(directory: Directory, kind: 'customer' | 'team' | 'agent', id: string): string {
  if (!id) return '(none)';
  if (kind === 'customer') return directory.customers.get(id) ?? id;
  if (kind === 'team') return directory.teams.get(id)?.name ?? id;
  return directory.agents.get(id)?.name ?? directory.apps.get(id)?.name ?? id;
}

function spendTable(title: string, kind: SpendKind, rows: SpendRow[], directory: Directory, currency: string, more?: Html): Html {
  return html`<div class="panel">
  <h2>${title} ${more ?? ''}</h2>
  <table class="spend" data-table="spend-${kind}">
    <thead><tr><th>${kind === 'agent' ? 'agent or app' : kind}</th><th class="num">spend</th><th class="num">calls</th><th>caps</th></tr></thead>
    <tbody>${rows.map(
      (r) => html`<tr>
      <td>${kind === 'customer' ? html`<a href="/console/customers/${r.key}">${nameOf(directory, kind, r.key)}</a>` : nameOf(directory, kind, r.key)}<br><small class="id">${r.key}</small></td>
      <td class="num">${money(r.revenue, r.currency, `${kind}-spend`, r.key)}</td>
      <td class="num">${count(r.calls)}</td>
      <td>${r.caps.map((cap) => gauge(cap, r.currency || currency))}</td>
    </tr>`,
    )}</tbody>
  </table>
</div>`;
}

/** The biggest spenders of a kind, with a link to all of them when there are more. */
function topSpenders(title: string, kind: SpendKind, rows: SpendRow[], directory: Directory, currency: string): Html {
  const more = rows.length > OVERVIEW_ROWS ? html`<a class="more" href="/console/spend/${kind}">all ${rows.length} &rarr;</a>` : undefined;
  return spendTable(title, kind, rows.slice(0, OVERVIEW_ROWS), directory, currency, more);
}

/** A page of every customer, team or agent with spend or a cap this month. */
export function spendListFragment(list: SpendList): Html {
  const link = (page: number, label: string) => html`<a href="/console/spend/${list.kind}?page=${page}">${label}</a>`;
  const pager = html`<p class="pager">page ${list.page} of ${list.pages}
    ${list.page > 1 ? link(list.page - 1, '← previous') : ''} ${list.page < list.pages ? link(list.page + 1, 'next →') : ''}
    · <a href="/console">overview</a></p>`;
  return html`<section class="grid"><div class="wide">${spendTable(`Spend this month by ${list.kind}`, list.kind, list.rows, list.directory, list.currency)}${pager}</div></section>`;
}

function toolsTable(title: string, figure: string, rows: AnalyticsRow[]): Html {
  return html`<div class="panel">
  <h2>${title}</h2>
  <table data-table="${figure}">
    <thead><tr><th>tool</th><th class="num">calls</th><th class="num">revenue</th><th class="num">margin</th><th class="num">margin %</th></tr></thead>
    <tbody>${rows.map((r) => {
      const currency = r.currency as string;
      const tool = r.tool_name as string;
      return html`<tr><td>${tool}</td><td class="num">${count(r.call_count as bigint)}</td>
      <td class="num">${money(r.revenue as bigint, currency, `${figure}-revenue`, tool)}</td>
      <td class="num">${money(r.margin as bigint, currency, `${figure}-margin`, tool)}</td>
      <td class="num">${formatPercent(r.margin as bigint, r.revenue as bigint) ?? '-'}</td></tr>`;
    })}</tbody>
  </table>
</div>`;
}

function chart(overview: Overview): Html {
  const currencies = [...new Set(overview.chart.rows.map((r) => r.currency as string))].sort();
  const currency = currencies[0] ?? 'USD';
  const steps: number[] = [];
  for (let t = overview.chart.from; t < overview.chart.to; t += overview.chart.stepMs) steps.push(t);
  const at = new Map(overview.chart.rows.filter((r) => r.currency === currency).map((r) => [(r.time as Date).getTime(), r]));
  const series = (column: 'revenue' | 'cogs_total' | 'margin') => steps.map((t) => formatNano((at.get(t)?.[column] as bigint | undefined) ?? 0n));
  const link = (range: ChartRange, label: string) =>
    html`<a class="${overview.range === range ? 'on' : ''}" href="/console?range=${range}" data-range="${range}">${label}</a>`;
  return html`<div class="panel wide">
  <h2>Spend over time <span class="ranges">${link('24h', 'last 24 h')} ${link('30d', 'last 30 days')}</span></h2>
  <div id="chart" class="chart"></div>
  ${currencies.length > 1 ? html`<p class="muted">Showing ${currency}; also billed in ${currencies.slice(1).join(', ')}.</p>` : ''}
  ${jsonScript('chart-data', {
    currency,
    stepMs: overview.chart.stepMs,
    // Epoch seconds; amounts as exact decimal strings (the chart plots them, the legend prints them).
    times: steps.map((t) => t / 1000),
    revenue: series('revenue'),
    cogs: series('cogs_total'),
    margin: series('margin'),
  })}
</div>`;
}

function sessionRows(sessions: SessionView[], directory: Directory, currency: string): Html {
  return html`${sessions.map(
    (s) => html`<tr>
    <td><code>${s.sessionId}</code></td><td><span class="status ${s.status.toLowerCase()}">${s.status}</span></td>
    <td>${nameOf(directory, 'agent', s.agentId ?? s.appId ?? '')}</td><td class="num">${count(s.toolCalls)}</td><td class="num">${count(s.errors)}</td>
    <td class="num">${money(s.costNano, currency, 'session-cost', s.sessionId)}</td><td>${iso(s.startedAt)}</td><td>${iso(s.lastEventAt)}</td>
  </tr>`,
  )}`;
}

function sessionsPanel(overview: Overview, currency: string): Html {
  const head = html`<thead><tr><th>session</th><th>status</th><th>agent or app</th><th class="num">calls</th><th class="num">errors</th><th class="num">cost</th><th>started</th><th>last event</th></tr></thead>`;
  return html`<div class="panel wide">
  <h2>Active sessions (${overview.sessions.open.length})</h2>
  <table data-table="sessions-open">${head}<tbody>${sessionRows(overview.sessions.open, overview.directory, currency)}</tbody></table>
  <h2>Recently ended</h2>
  <table data-table="sessions-recent">${head}<tbody>${sessionRows(overview.sessions.recent, overview.directory, currency)}</tbody></table>
</div>`;
}

function pausesPanel(pauses: PauseView[], directory: Directory, currency: string): Html {
  return html`<div class="panel">
  <h2>Paused by spend caps</h2>
  ${pauses.length === 0 ? html`<p class="muted">Nothing is paused.</p>` : ''}
  <table data-table="pauses"><tbody>${pauses.map(
    (p) => html`<tr class="${p.inForce ? 'in-force' : 'expired'}" data-pause="${p.scopeKind}:${p.scopeId}">
    <td>${p.scopeKind} ${p.scopeKind === 'session' ? p.scopeId : nameOf(directory, p.scopeKind === 'app' ? 'agent' : (p.scopeKind as 'agent'), p.scopeId)}<br><small class="id">cap ${p.capId}, ${p.periodKey}, limit ${formatMoney(p.limitNano, currency)}</small></td>
    <td>${iso(p.pausedAt)}</td>
    <td>${p.inForce
      ? html`<button class="lift" data-cap="${p.capId}" data-scope="${p.scopeId}" data-period="${p.periodKey}">Lift pause</button>`
      : html`<span class="muted">expired with its period</span>`}</td>
  </tr>`,
  )}</tbody></table>
</div>`;
}

function healthPanel(health: Overview['health']): Html {
  return html`<div class="panel">
  <h2>Pipeline health</h2>
  <table data-table="health">
    <thead><tr><th>stage</th><th class="num">lag</th><th class="num">pending</th><th class="num">consumers</th><th class="num">dead letters</th></tr></thead>
    <tbody>${health.stages.map(
      (s) => html`<tr class="${(s.lag ?? 0) > 10_000 || s.deadLetters > 0 ? 'warn' : ''}"><td>${s.stage}</td><td class="num" data-figure="lag" data-key="${s.stage}">${s.lag ?? '?'}</td><td class="num">${s.pending}</td><td class="num">${s.consumers}</td><td class="num" data-figure="dead-letters" data-key="${s.stage}">${s.deadLetters}</td></tr>`,
    )}</tbody>
  </table>
  <h3>Rejected events of this tenant, by reason</h3>
  <p class="muted">Among the newest ${health.rejected.scanned} of ${health.rejected.length} entries of the shared rejected stream (npm run dlq -- rejected list).</p>
  ${health.rejected.byCode.length === 0 ? html`<p class="muted">None.</p>` : ''}
  <table data-table="rejected"><tbody>${health.rejected.byCode.map(
    (r) => html`<tr><td>${r.stage}</td><td><code>${r.code}</code></td><td class="num" data-figure="rejected" data-key="${r.code}">${r.count}</td></tr>`,
  )}</tbody></table>
</div>`;
}

/** The overview's live part: replaced every few seconds by the same markup, fetched again. */
export function overviewFragment(overview: Overview): Html {
  const currency = (overview.totals[0]?.currency as string | undefined) ?? 'USD';
  return html`${kpis(overview.totals, overview.period)}
<section class="grid">
  ${chart(overview)}
  ${topSpenders('Spend this month by customer', 'customer', overview.customers, overview.directory, currency)}
  ${topSpenders('by team', 'team', overview.teams, overview.directory, currency)}
  ${topSpenders('by agent', 'agent', overview.agents, overview.directory, currency)}
  ${toolsTable('Top tools by revenue', 'tools-by-revenue', overview.topByRevenue)}
  ${toolsTable('Top tools by margin', 'tools-by-margin', overview.topByMargin)}
  ${pausesPanel(overview.pauses, overview.directory, currency)}
  ${sessionsPanel(overview, currency)}
  ${healthPanel(overview.health)}
</section>
<p class="updated muted" data-updated="${overview.now}">Updated ${iso(overview.now)}; refreshes every 5 s.</p>`;
}

export interface InvoiceView {
  customerId: string;
  customerName: string;
  periodStart: number;
  periodEnd: number;
  invoice: Invoice;
  now: number;
}

export function invoiceFragment(view: InvoiceView): Html {
  const { invoice } = view;
  const currency = invoice.currency;
  return html`<section class="panel wide">
  <h1>Current invoice: ${view.customerName} <small class="id">${view.customerId}</small></h1>
  <p>Draft for ${iso(view.periodStart)} to ${iso(view.periodEnd)}, current to the last ledgered event. ${invoice.rounding}.</p>
  <table class="invoice" data-table="invoice">
    <thead><tr><th>step</th><th>line</th><th>rule</th><th class="num">quantity</th><th class="num">unit price</th><th class="num">amount</th></tr></thead>
    <tbody>${invoice.lines.map(
      (line, i) => html`<tr><td>${line.step}</td><td>${line.description}</td><td><code>${line.rule}</code></td>
      <td class="num">${line.quantity}</td><td class="num">${line.unit_price}</td><td class="num">${money(line.amount_nano, currency, 'invoice-line', String(i))}</td></tr>`,
    )}</tbody>
    <tfoot>
      <tr><th colspan="5">Subtotal (usage lines)</th><td class="num">${money(parseNano(invoice.subtotal), currency, 'invoice-subtotal', view.customerId)}</td></tr>
      <tr><th colspan="5">Total</th><td class="num">${money(parseNano(invoice.total), currency, 'invoice-total', view.customerId)}</td></tr>
    </tfoot>
  </table>
  <p class="muted">Exact: subtotal <span data-figure="invoice-subtotal-exact" data-nano="${invoice.subtotal_nano.toString()}">${invoice.subtotal_exact}</span>,
    total <span data-figure="invoice-total-exact" data-nano="${invoice.total_nano.toString()}">${invoice.total_exact}</span> ${currency}. <a href="/console">Back to the overview</a></p>
</section>
<p class="updated muted" data-updated="${view.now}">Updated ${iso(view.now)}; refreshes every 5 s.</p>`;
}
