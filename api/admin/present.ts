import type { Row } from './db.js';

/** A timestamp column as an RFC 3339 string (null stays null). */
export function iso(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (value instanceof Date) return Number.isFinite(value.getTime()) ? value.toISOString() : null;
  return String(value);
}

/** The columns every tenant-owned row shows: its id and when it was made and last changed. */
export function basics(row: Row): { id: string; created_at: string; updated_at: string } {
  return { id: row.id, created_at: iso(row.created_at)!, updated_at: iso(row.updated_at ?? row.created_at)! };
}
