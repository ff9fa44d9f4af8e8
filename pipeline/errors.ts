import { TransientError } from './stage.js';

const TRANSIENT_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH',
  'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT',
]);
// PostgreSQL SQLSTATEs worth retrying: connection exceptions (08), shutdown, overload, serialization and deadlock.
const TRANSIENT_SQLSTATES = /^(08...|57P01|57P02|57P03|53300|53400|40001|40P01)$/;

/** True when an error says a dependency is down or overloaded, not that the entry is bad. */
export function isTransient(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof TransientError) return true;
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (typeof code === 'string' && (TRANSIENT_CODES.has(code) || TRANSIENT_SQLSTATES.test(code))) return true;
    if (typeof message === 'string' && /ECONNREFUSED|ECONNRESET|socket hang up|Connection is closed|fetch failed|Timeout error/i.test(message)) {
      return true;
    }
  }
  return false;
}

export function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`.slice(0, 2000);
  return String(error).slice(0, 2000);
}
