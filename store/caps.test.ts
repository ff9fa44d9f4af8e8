import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CapBook, capPeriod, type SpendCap } from './caps.js';
import { createTenant } from './tenants.js';
import { isolated, type Isolated } from '../test/support/isolated.js';

function cap(period: SpendCap['period']): SpendCap {
  return { id: 'cap_1', tenantId: 'ten_1', scopeKind: 'agent', scopeId: 'agt_1', period, limitNano: 1n, action: 'pause' };
}

describe('capPeriod', () => {
  it('names the day or month an instant falls in, whatever was asked before it', () => {
    const day = cap('day');
    const month = cap('month');
    const asked: [number, string, string][] = [
      [Date.UTC(2026, 0, 31, 23, 59, 59, 999), '2026-01-31', '2026-01'],
      [Date.UTC(2026, 1, 1), '2026-02-01', '2026-02'],
      [Date.UTC(2026, 0, 31, 12), '2026-01-31', '2026-01'],
      [Date.UTC(2026, 0, 31), '2026-01-31', '2026-01'],
      [Date.UTC(2026, 0, 30, 23, 59, 59, 999), '2026-01-30', '2026-01'],
      [Date.UTC(2026, 11, 31, 23), '2026-12-31', '2026-12'],
      [Date.UTC(2027, 0, 1), '2027-01-01', '2027-01'],
    ];
    for (const [at, dayKey, monthKey] of asked) {
      expect(capPeriod(day, { recordedAt: at })).toEqual({ key: dayKey, endsAt: Date.UTC(Number(dayKey.slice(0, 4)), Number(dayKey.slice(5, 7)) - 1, Number(dayKey.slice(8)) + 1) });
      expect(capPeriod(month, { recordedAt: at })).toEqual({ key: monthKey, endsAt: Date.UTC(Number(monthKey.slice(0, 4)), Number(monthKey.slice(5, 7)), 1) });
    }
  });

  it('gives a session cap the session, and no period without one', () => {
    expect(capPeriod(cap('session'), { recordedAt: 1_000, sessionId: 's1' })).toEqual({ key: 's:s1', endsAt: 1_000 + 86_400_000 });
    expect(capPeriod(cap('session'), { recordedAt: 1_000 })).toBeUndefined();
  });
});

describe('CapBook.capsFor', () => {
  let world: Isolated;
  beforeAll(async () => {
    world = await isolated('capsbook');
  });
  afterAll(async () => {
    await world.cleanup();
  });

  it("finds the caps of each of an event's scopes, a plan's only with a session, and none of another tenant's or a disabled one", async () => {
    const { sql } = world;
    const { tenantId } = await createTenant(sql, 'caps book');
    const { tenantId: otherTenant } = await createTenant(sql, 'another');
    const caps: [string, string, string, string, string][] = [
      ['cap_key', tenantId, 'api_key', 'cred_1', 'month'],
      ['cap_agent', tenantId, 'agent', 'agt_1', 'day'],
      ['cap_agent_2', tenantId, 'agent', 'agt_1', 'month'],
      ['cap_app', tenantId, 'app', 'app_1', 'month'],
      ['cap_team', tenantId, 'team', 'team_1', 'month'],
      ['cap_customer', tenantId, 'customer', 'cus_1', 'month'],
      ['cap_session', tenantId, 'session', 'ses_1', 'session'],
      ['cap_plan', tenantId, 'plan', 'rp_1', 'session'],
      ['cap_other_agent', tenantId, 'agent', 'agt_2', 'month'],
      ['cap_other_tenant', otherTenant, 'agent', 'agt_1', 'month'],
    ];
    for (const [id, tenant, kind, scope, period] of caps) {
      await sql`INSERT INTO spend_caps (id, tenant_id, scope_kind, scope_id, period, limit_nano) VALUES (${id}, ${tenant}, ${kind}, ${scope}, ${period}, 1000)`;
    }
    await sql`INSERT INTO spend_caps (id, tenant_id, scope_kind, scope_id, period, limit_nano, status) VALUES ('cap_disabled', ${tenantId}, 'agent', 'agt_1', 'month', 1000, 'disabled')`;
    const book = new CapBook(sql);
    await book.loadAll();
    const scope = { credentialId: 'cred_1', agentId: 'agt_1', appId: 'app_1', teamId: 'team_1', customerId: 'cus_1' };
    const ids = (found: readonly SpendCap[]) => found.map((c) => c.id).sort();

    expect(ids(book.capsFor(tenantId, scope, 'ses_1', 'rp_1'))).toEqual(
      ['cap_agent', 'cap_agent_2', 'cap_app', 'cap_customer', 'cap_key', 'cap_plan', 'cap_session', 'cap_team'].sort(),
    );
    // The plan named in the scope, when no plan is passed.
    expect(ids(book.capsFor(tenantId, { ...scope, ratePlanId: 'rp_1' }, 'ses_1'))).toContain('cap_plan');
    // No session: neither the session's caps nor the plan's.
    expect(ids(book.capsFor(tenantId, scope, undefined, 'rp_1'))).toEqual(['cap_agent', 'cap_agent_2', 'cap_app', 'cap_customer', 'cap_key', 'cap_team'].sort());
    // Scopes the event does not have are not looked up; an empty id is no scope.
    expect(ids(book.capsFor(tenantId, { teamId: 'team_1', customerId: 'cus_9', agentId: '' }))).toEqual(['cap_team']);
    expect(book.capsFor(tenantId, { teamId: 'team_9', customerId: 'cus_9' })).toEqual([]);
    expect(ids(book.capsFor(otherTenant, scope))).toEqual(['cap_other_tenant']);
    expect(book.hasPlanCaps(tenantId)).toBe(true);
    expect(book.hasPlanCaps(otherTenant)).toBe(false);
  });
});
