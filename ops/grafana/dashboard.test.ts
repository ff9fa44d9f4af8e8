import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dispatchBatch } from '../../stages/analytics-dispatch/index.js';
import { ledgeredEvent, stageEntries } from '../../stages/testing.js';
import { ANALYTICS_QUERIES, renderForConsole, runAnalyticsQuery } from '../../store/analytics-queries.js';
import { isolated, type Isolated } from '../../test/support/isolated.js';
import { DASHBOARD_FILE, dashboardJson, PANELS } from './dashboard.js';

interface Panel {
  title: string;
  description: string;
  targets: { rawSql: string }[];
}

let world: Isolated;
const FROM = Date.UTC(2026, 10, 1);
const TO = Date.UTC(2026, 11, 1);

/** What grafana-clickhouse-datasource does to a panel's SQL before sending it: macros and the $tenant variable. */
function asGrafanaSends(rawSql: string, tenantId: string): string {
  return rawSql
    .replaceAll('${tenant:singlequote}', `'${tenantId.replace(/'/g, "\\'")}'`)
    .replaceAll('$__fromTime', `toDateTime(${FROM / 1000})`)
    .replaceAll('$__toTime', `toDateTime(${TO / 1000})`);
}

beforeAll(async () => {
  world = await isolated('grafana', { clickhouse: true });
  const at = Date.UTC(2026, 10, 12, 9, 30);
  await dispatchBatch(
    world.clickhouse!,
    stageEntries([
      ledgeredEvent({ tenantId: 'ten_g', recordedAt: at, cost: { total: 123_456_789n }, sessionId: 'sg' }),
      ledgeredEvent({ tenantId: 'ten_g', recordedAt: at + 60_000, status: 'TIMEOUT', cost: { total: 1n }, sessionId: 'sg' }),
    ]),
  );
});

afterAll(async () => {
  await world?.cleanup();
});

describe('the Grafana dashboard', () => {
  it('is the committed file, generated from the console queries', async () => {
    expect(await readFile(DASHBOARD_FILE, 'utf8')).toBe(dashboardJson());
    const dashboard = JSON.parse(dashboardJson()) as { panels: Panel[] };
    const titles = dashboard.panels.map((p) => p.title.toLowerCase()).join(' | ');
    for (const subject of ['revenue', 'margin', 'spend by agent', 'error rate', 'session lengths']) expect(titles).toContain(subject);
  });

  it('runs every panel query against ClickHouse and gets what the console gets', async () => {
    const dashboard = JSON.parse(await readFile(DASHBOARD_FILE, 'utf8')) as { panels: Panel[] };
    expect(dashboard.panels).toHaveLength(PANELS.length);
    for (const [i, panel] of dashboard.panels.entries()) {
      const query = PANELS[i].query;
      const grafana = await world.clickhouse!.query({ query: asGrafanaSends(panel.targets[0].rawSql, 'ten_g'), format: 'TabSeparatedWithNames' });
      const asConsole = await world.clickhouse!.query({
        query: renderForConsole(query, { tenantId: 'ten_g', from: FROM, to: TO }),
        format: 'TabSeparatedWithNames',
      });
      const text = await grafana.text();
      expect({ panel: panel.title, text }).toEqual({ panel: panel.title, text: await asConsole.text() });
      expect(text.split('\n').filter(Boolean).length, panel.title).toBeGreaterThan(1); // a header and at least one row
    }
    const [totals] = await runAnalyticsQuery(world.clickhouse!, ANALYTICS_QUERIES.totals, { tenantId: 'ten_g', from: FROM, to: TO });
    expect(totals.revenue).toBe(123_456_790n);
  });
});
