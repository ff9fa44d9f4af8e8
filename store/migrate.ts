import { readdir, readFile } from 'node:fs/promises';
import { createClient } from '@clickhouse/client';
import { projectPath } from '../pipeline/paths.js';
import type { Sql } from '../pipeline/postgres.js';
import type { ClickHouseSettings } from './clickhouse.js';

const PG_DIR = projectPath('schemas', 'migrations', 'postgres');
const CH_DIR = projectPath('schemas', 'migrations', 'clickhouse');

async function sqlFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.endsWith('.sql')).sort();
}

/**
 * Applies each PostgreSQL migration once, in file-name order, each in its own transaction,
 * under an advisory lock so concurrent starters do not race. Returns the names applied now.
 */
export async function migratePostgres(sql: Sql): Promise<string[]> {
  const applied: string[] = [];
  await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(hashtext('agentmeter.migrations'))`;
    await tx`CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`;
    const done = new Set((await tx<{ name: string }[]>`SELECT name FROM schema_migrations`).map((r) => r.name));
    for (const file of await sqlFiles(PG_DIR)) {
      if (done.has(file)) continue;
      await tx.unsafe(await readFile(`${PG_DIR}/${file}`, 'utf8'));
      await tx`INSERT INTO schema_migrations (name) VALUES (${file})`;
      applied.push(file);
    }
  });
  return applied;
}

/**
 * Creates the ClickHouse database and applies each file of schemas/migrations/clickhouse once,
 * in file-name order, recording it in {db}.schema_migrations (ClickHouse has no transactions: a
 * file is recorded after its last statement). Statements are written to be safe to run again
 * (IF NOT EXISTS), so a file interrupted half-way is simply applied again; the one statement
 * that cannot say IF NOT EXISTS on ClickHouse 18.16, ALTER TABLE ... ADD COLUMN, is taken as
 * done when the column already exists. Returns the names applied now.
 */
export async function migrateClickHouse(settings: ClickHouseSettings): Promise<string[]> {
  const admin = createClient({ url: settings.url, username: settings.username ?? 'default', password: settings.password ?? '' });
  const db = settings.database;
  const applied: string[] = [];
  try {
    await admin.command({ query: `CREATE DATABASE IF NOT EXISTS ${db}` });
    await admin.command({
      query: `CREATE TABLE IF NOT EXISTS ${db}.schema_migrations (name String, applied_at DateTime('UTC')) ENGINE = MergeTree() ORDER BY name`,
    });
    const done = new Set(
      (await (await admin.query({ query: `SELECT name FROM ${db}.schema_migrations`, format: 'JSONEachRow' })).json<{ name: string }>()).map((r) => r.name),
    );
    for (const file of await sqlFiles(CH_DIR)) {
      if (done.has(file)) continue;
      for (const statement of clickHouseStatements(await readFile(`${CH_DIR}/${file}`, 'utf8'))) {
        await runStatement(admin, statement.replaceAll('{db}', db));
      }
      await admin.insert({ table: `${db}.schema_migrations`, values: [{ name: file, applied_at: Math.floor(Date.now() / 1000) }], format: 'JSONEachRow' });
      applied.push(file);
    }
  } finally {
    await admin.close();
  }
  return applied;
}

/** The statements of a migration file: split on `;` at the end of a line, comments removed. */
function clickHouseStatements(text: string): string[] {
  return text
    .split(/;\s*$/m)
    .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
    .filter(Boolean);
}

async function runStatement(admin: ReturnType<typeof createClient>, statement: string): Promise<void> {
  try {
    await admin.command({ query: statement });
  } catch (error) {
    const addsColumn = /^ALTER\s+TABLE\s+\S+\s+ADD\s+COLUMN\b/i.test(statement);
    if (addsColumn && /column with this name already exists/i.test(String((error as Error)?.message))) return;
    throw error;
  }
}
