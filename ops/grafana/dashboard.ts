// The Grafana dashboard JSON, generated from the console's queries (store/analytics-queries.ts),
// so that a panel shows exactly what the console computes.
//   npm run grafana:dashboard            rewrites ops/grafana/dashboards/agentmeter.json
//   npm run grafana:dashboard -- --check exits 1 when the committed file is out of date
import { readFile, writeFile } from 'node:fs/promises';
import { projectPath } from '../../pipeline/paths.js';
import { isMain, runCli } from '../cli.js';
import { ANALYTICS_QUERIES, renderForGrafana, type AnalyticsQuery } from '../../store/analytics-queries.js';

export const DASHBOARD_FILE = projectPath('ops', 'grafana', 'dashboards', 'agentmeter.json');
const DATASOURCE = { type: 'grafana-clickhouse-datasource', uid: 'agentmeter-clickhouse' };

interface PanelSpec {
  query: AnalyticsQuery;
  type: 'timeseries' | 'table' | 'barchart';
  title: string;
  unit?: string;
  w: number;
  h: number;
}

/** The panels, in reading order: revenue, margin, spend by agent, error rates, session lengths, then tools and customers. */
export const PANELS: PanelSpec[] = [
  { query: ANALYTICS_QUERIES.revenueDaily, type: 'timeseries', title: 'Revenue per day', unit: 'currencyUSD', w: 12, h: 8 },
  { query: ANALYTICS_QUERIES.revenueHourly, type: 'timeseries', title: 'Revenue, COGS and margin per hour', unit: 'currencyUSD', w: 12, h: 8 },
  { query: ANALYTICS_QUERIES.spendByAgent, type: 'table', title: 'Spend by agent', w: 12, h: 9 },
  { query: ANALYTICS_QUERIES.errorRatesHourly, type: 'timeseries', title: 'Error rate per hour', unit: 'percentunit', w: 12, h: 9 },
  { query: ANALYTICS_QUERIES.sessionLengthsDaily, type: 'timeseries', title: 'Session lengths (seconds)', unit: 's', w: 12, h: 8 },
  { query: ANALYTICS_QUERIES.topToolsByMargin, type: 'table', title: 'Top tools by margin', w: 12, h: 8 },
  { query: ANALYTICS_QUERIES.topToolsByRevenue, type: 'table', title: 'Top tools by revenue', w: 12, h: 8 },
  { query: ANALYTICS_QUERIES.spendByCustomer, type: 'table', title: 'Spend by customer', w: 12, h: 8 },
];

export function buildDashboard(): Record<string, unknown> {
  let x = 0;
  let y = 0;
  const panels = PANELS.map((spec, i) => {
    if (x + spec.w > 24) {
      x = 0;
      y += spec.h;
    }
    const gridPos = { x, y, w: spec.w, h: spec.h };
    x += spec.w;
    const timeSeries = spec.type === 'timeseries';
    return {
      id: i + 1,
      type: spec.type,
      title: spec.title,
      description: `${spec.query.title} (query ${spec.query.id} of store/analytics-queries.ts, the console's)`,
      datasource: DATASOURCE,
      gridPos,
      fieldConfig: { defaults: spec.unit ? { unit: spec.unit } : {}, overrides: [] },
      options: {},
      targets: [
        {
          refId: 'A',
          datasource: DATASOURCE,
          editorType: 'sql',
          queryType: timeSeries ? 'timeseries' : 'table',
          format: timeSeries ? 0 : 1,
          rawSql: renderForGrafana(spec.query),
        },
      ],
    };
  });
  return {
    uid: 'agentmeter-overview',
    title: 'agentmeter: revenue, margin, agents, errors, sessions',
    tags: ['agentmeter'],
    timezone: 'utc',
    schemaVersion: 39,
    version: 1,
    editable: false,
    time: { from: 'now-7d', to: 'now' },
    refresh: '30s',
    templating: {
      list: [
        {
          name: 'tenant',
          label: 'Tenant',
          type: 'query',
          datasource: DATASOURCE,
          query: 'SELECT DISTINCT tenant_id FROM usage_daily ORDER BY tenant_id',
          refresh: 1,
          includeAll: false,
          multi: false,
        },
      ],
    },
    panels,
  };
}

export function dashboardJson(): string {
  return JSON.stringify(buildDashboard(), null, 2) + '\n';
}

async function main(argv: string[]): Promise<number> {
  const check = argv.includes('--check');
  const wanted = dashboardJson();
  if (check) {
    const current = await readFile(DASHBOARD_FILE, 'utf8').catch(() => '');
    if (current !== wanted) {
      console.error(`${DASHBOARD_FILE} is out of date: run npm run grafana:dashboard`);
      return 1;
    }
    console.error(`${DASHBOARD_FILE} is up to date`);
    return 0;
  }
  await writeFile(DASHBOARD_FILE, wanted);
  console.error(`wrote ${DASHBOARD_FILE} (${PANELS.length} panels)`);
  return 0;
}

if (isMain(import.meta.url)) await runCli('usage: npm run grafana:dashboard -- [--check]', main);
