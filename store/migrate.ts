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

/** Creates the ClickHouse database and applies every statement (all are idempotent: IF NOT EXISTS). */
export async function migrateClickHouse(settings: ClickHouseSettings): Promise<void> {
  const admin = createClient({ url: settings.url, username: settings.username ?? 'default', password: settings.password ?? '' });
  try {
    await admin.command({ query: `CREATE DATABASE IF NOT EXISTS ${settings.database}` });
    for (const file of await sqlFiles(CH_DIR)) {
      const text = await readFile(`${CH_DIR}/${file}`, 'utf8');
      const statements = text
        .split(/;\s*$/m)
        .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
        .filter(Boolean);
      for (const statement of statements) {
        await admin.command({ query: statement.replaceAll('{db}', settings.database) });
      }
    }
  } finally {
    await admin.close();
  }
}
