import type { Sql } from '../pipeline/postgres.js';

/** A tenant's alert settings (alert_settings; the defaults below when it has no row). */
export interface AlertSettings {
  /** Thresholds in basis points of a cap's limit (5000 = 50 %), ascending. */
  thresholdBps: number[];
  /** Velocity: the last hour's spend must exceed this many thousandths of the trailing hourly average. */
  velocityFactorMilli: number;
  /** ... and be at least this much (nano-units). */
  velocityMinNano: bigint;
  /** A session's spend rate so far is carried this far ahead for its projection. */
  projectionHorizonSeconds: number;
}

const DEFAULT_ALERT_SETTINGS: AlertSettings = {
  thresholdBps: [5000, 8000, 10000],
  velocityFactorMilli: 3000,
  velocityMinNano: 10_000_000_000n,
  projectionHorizonSeconds: 3600,
};

interface SettingsRow {
  tenant_id: string;
  threshold_bps: number[];
  velocity_factor_milli: number;
  velocity_min_nano: string;
  projection_horizon_seconds: number;
}

function fromRow(row: SettingsRow): AlertSettings {
  return {
    thresholdBps: [...row.threshold_bps].sort((a, b) => a - b),
    velocityFactorMilli: row.velocity_factor_milli,
    velocityMinNano: BigInt(row.velocity_min_nano),
    projectionHorizonSeconds: row.projection_horizon_seconds,
  };
}

/** The settings of each tenant asked for (the defaults for a tenant without a row). */
export async function readAlertSettings(sql: Sql, tenantIds: string[]): Promise<Map<string, AlertSettings>> {
  const rows = tenantIds.length ? await sql<SettingsRow[]>`SELECT * FROM alert_settings WHERE tenant_id = ANY (${tenantIds}::text[])` : [];
  const settings = new Map(tenantIds.map((id) => [id, DEFAULT_ALERT_SETTINGS]));
  for (const row of rows) settings.set(row.tenant_id, fromRow(row));
  return settings;
}

export async function writeAlertSettings(sql: Sql, tenantId: string, settings: AlertSettings): Promise<AlertSettings> {
  const [row] = await sql<SettingsRow[]>`
    INSERT INTO alert_settings (tenant_id, threshold_bps, velocity_factor_milli, velocity_min_nano, projection_horizon_seconds)
    VALUES (${tenantId}, ${settings.thresholdBps}::integer[], ${settings.velocityFactorMilli}, ${settings.velocityMinNano.toString()},
            ${settings.projectionHorizonSeconds})
    ON CONFLICT (tenant_id) DO UPDATE SET
      threshold_bps = EXCLUDED.threshold_bps, velocity_factor_milli = EXCLUDED.velocity_factor_milli,
      velocity_min_nano = EXCLUDED.velocity_min_nano, projection_horizon_seconds = EXCLUDED.projection_horizon_seconds,
      updated_at = now()
    RETURNING *`;
  return fromRow(row);
}

/**
 * Alert settings in memory for a stage, each tenant's read again after `ttlMs`, so a change
 * through the admin API reaches the alerts within that time without a control message.
 */
export class AlertSettingsCache {
  private readonly entries = new Map<string, { settings: AlertSettings; at: number }>();

  constructor(
    private readonly sql: Sql,
    private readonly ttlMs = 5_000,
  ) {}

  async load(tenantIds: Iterable<string>, now = Date.now()): Promise<Map<string, AlertSettings>> {
    const wanted = [...new Set(tenantIds)];
    const stale = wanted.filter((id) => (this.entries.get(id)?.at ?? -Infinity) + this.ttlMs <= now);
    if (stale.length) for (const [id, settings] of await readAlertSettings(this.sql, stale)) this.entries.set(id, { settings, at: now });
    return new Map(wanted.map((id) => [id, this.entries.get(id)!.settings]));
  }
}
