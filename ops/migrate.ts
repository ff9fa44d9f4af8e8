// Applies the PostgreSQL migrations (once each, in order) and the ClickHouse schema (once each, in order).
import { loadConfig } from '../pipeline/config.js';
import { migrateClickHouse, migratePostgres } from '../store/migrate.js';
import { connectPostgres } from '../pipeline/postgres.js';

const config = loadConfig();
const sql = connectPostgres(config.DATABASE_URL, { max: 1, name: 'migrate' });
try {
  const applied = await migratePostgres(sql);
  console.error(`postgres: ${applied.length ? `applied ${applied.join(', ')}` : 'up to date'}`);
  const chApplied = await migrateClickHouse({
    url: config.CLICKHOUSE_URL,
    database: config.CLICKHOUSE_DATABASE,
    username: config.CLICKHOUSE_USER,
    password: config.CLICKHOUSE_PASSWORD,
  });
  console.error(`clickhouse: database ${config.CLICKHOUSE_DATABASE} ${chApplied.length ? `applied ${chApplied.join(', ')}` : 'up to date'}`);
} finally {
  await sql.end({ timeout: 5 });
}
