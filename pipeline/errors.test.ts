import { describe, expect, it } from 'vitest';
import { isTransient } from './errors.js';
import { TransientError } from './errors.js';

const withCode = (code: string, message = 'x') => Object.assign(new Error(message), { code });

describe('isTransient: an outage, or a problem of the data', () => {
  it('takes connection-level failures and an unready schema as outages', () => {
    for (const code of ['ECONNREFUSED', 'ECONNRESET', 'CONNECTION_CLOSED', 'CONNECT_TIMEOUT', '08006', '57P01', '53300', '40P01', '42P01', '3D000']) {
      expect({ code, transient: isTransient(withCode(code)) }).toEqual({ code, transient: true });
    }
    expect(isTransient(new Error('Command timed out'))).toBe(true);
    expect(isTransient(new TransientError('down'))).toBe(true);
    expect(isTransient(new Error('wrapped', { cause: withCode('ECONNREFUSED') }))).toBe(true);
  });

  it('takes a row a store refuses as a data error (bounded retries, then the dead letters)', () => {
    for (const code of ['22021', '22003', '22P02', '23505', '23502', '23514']) {
      expect({ code, transient: isTransient(withCode(code)) }).toEqual({ code, transient: false });
    }
    expect(isTransient(new TypeError("Cannot read properties of undefined (reading 'x')"))).toBe(false);
  });
});
