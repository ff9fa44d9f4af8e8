import postgres from 'postgres';

export type Sql = postgres.Sql;

/** One pool per process. bigint and numeric columns come back as strings: convert with BigInt(). */
export function connectPostgres(url: string, options: { max?: number; name?: string } = {}): Sql {
  return postgres(url, {
    max: options.max ?? 4,
    onnotice: () => {},
    connection: { application_name: options.name ?? 'agentmeter' },
  });
}
