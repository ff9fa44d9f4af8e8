import { RatingError, ratePeriod, type Invoice, type InvoiceLine, type SubscriptionPeriod } from '../domain/rating/rate-period.js';
import { enqueueWebhookEvent } from './webhooks.js';
import type { RowKind, UsageRow } from '../domain/rating/usage-rows.js';
import { validateSubscriptionTerms } from '../domain/rating/plan.js';
import { formatNano, minorUnitDigits, parseNano, roundToMinorUnit } from '../domain/money.js';
import { periodContaining, periodLabel, periodsBetween, type BillingPeriodKind, type Period } from '../domain/billing/periods.js';
import type { Sql } from '../pipeline/postgres.js';
import type { TransactionSql } from 'postgres';
import { newId } from './credentials.js';
import { PlanCache } from './rate-plans.js';

type Db = Sql | TransactionSql;

export interface DraftInvoice {
  customerId: string;
  periodStart: number;
  periodEnd: number;
  subscriptionIds: string[];
  invoice: Invoice;
}

interface SubscriptionInfo {
  id: string;
  commitment: unknown;
  allocation: unknown;
  billing_period: BillingPeriodKind;
  anchor: Date;
  effective_from: Date;
  effective_to: Date | null;
  rate_plan_id: string;
  rate_plan_version: number;
  rate_plan_version_id: string;
}

async function customerSubscriptions(db: Db, tenantId: string, customerId: string): Promise<SubscriptionInfo[]> {
  return db<SubscriptionInfo[]>`
    SELECT s.id, s.commitment, s.allocation, s.billing_period, coalesce(s.billing_anchor, s.effective_from) AS anchor,
           s.effective_from, s.effective_to, v.rate_plan_id, v.version AS rate_plan_version, v.id AS rate_plan_version_id
    FROM subscriptions s JOIN rate_plan_versions v ON v.tenant_id = s.tenant_id AND v.id = s.rate_plan_version_id
    WHERE s.tenant_id = ${tenantId} AND s.customer_id = ${customerId}
    ORDER BY s.id`;
}

const endOf = (s: SubscriptionInfo) => (s.effective_to ? s.effective_to.getTime() : Number.POSITIVE_INFINITY);

/** The subscriptions an invoice for `period` covers: active during it, billed by exactly that period. */
function membersOf(subscriptions: SubscriptionInfo[], period: Period): SubscriptionInfo[] {
  return subscriptions.filter((s) => {
    if (s.effective_from.getTime() >= period.end || endOf(s) <= period.start) return false;
    const own = periodContaining(s.billing_period, s.anchor.getTime(), Math.max(period.start, s.effective_from.getTime()));
    return own.start === period.start && own.end === period.end;
  });
}

/** The period of the customer's invoice containing `at`: that of its subscription active then (else the calendar month). */
function invoicePeriodAt(subscriptions: SubscriptionInfo[], at: number): Period | undefined {
  const active = subscriptions.filter((s) => s.effective_from.getTime() <= at && at < endOf(s));
  const candidates = (active.length ? active : subscriptions).map((s) => periodContaining(s.billing_period, s.anchor.getTime(), at));
  candidates.sort((a, b) => a.start - b.start || a.end - b.end);
  return candidates.find((p) => membersOf(subscriptions, p).length > 0);
}

function toUsageRow(row: { kind: RowKind; key: string; counters: Record<string, string> }): UsageRow {
  return {
    kind: row.kind,
    key: row.key,
    counters: Object.fromEntries(Object.entries(row.counters).map(([name, value]) => [name, BigInt(value)])),
  };
}

/** What the rating engine rates for these members of a period: each one's plan, terms and usage rows. */
async function subscriptionPeriods(plans: PlanCache, tenantId: string, members: SubscriptionInfo[], rowsOf: (subscriptionId: string) => UsageRow[]): Promise<SubscriptionPeriod[]> {
  const periods: SubscriptionPeriod[] = [];
  for (const subscription of members) {
    const terms = validateSubscriptionTerms({ commitment: subscription.commitment, allocation: subscription.allocation });
    if (!terms.ok) throw new Error(`subscription ${subscription.id} has invalid terms: ${terms.errors.map((e) => `${e.path} ${e.message}`).join('; ')}`);
    periods.push({
      subscriptionId: subscription.id,
      plan: await plans.forSubscription(tenantId, subscription.id),
      terms: terms.terms,
      rows: rowsOf(subscription.id),
    });
  }
  return periods;
}

/** The period rated from the usage rows invoice-rollup (and corrections) left. */
async function rateMembers(db: Db, plans: PlanCache, tenantId: string, period: Period, members: SubscriptionInfo[]): Promise<Invoice> {
  const rows = await db<{ subscription_id: string; kind: RowKind; key: string; counters: Record<string, string> }[]>`
    SELECT subscription_id, kind, key, counters FROM invoice_usage
    WHERE tenant_id = ${tenantId} AND period_start = ${new Date(period.start)}
      AND subscription_id = ANY(${members.map((s) => s.id)})`;
  return ratePeriod(await subscriptionPeriods(plans, tenantId, members, (id) => rows.filter((r) => r.subscription_id === id).map(toUsageRow)));
}

/**
 * The first billing period of a customer that subscription `subscriptionId` (just written, in
 * `tx`) leaves unrateable, with the rating engine's refusal; undefined when every one can be
 * rated. Each period is rated as draftInvoice and closePeriod rate it (the same members, their
 * plans and terms, read through `tx`), with no usage: what the engine refuses there (two
 * currencies, a commitment group with two commitments, overage rates or allocations of an agent,
 * commitment terms on a plan that is not COMMITTED) it refuses whatever the usage. Rated are the
 * period of the subscription's start and those where another subscription of the customer starts
 * while it runs: the members of every other period it is billed in are a subset of one of these,
 * and what the engine accepts for a set of subscriptions it accepts for a subset. Takes the
 * customer's close lock until `tx` ends.
 */
export async function unrateablePeriod(
  tx: TransactionSql,
  tenantId: string,
  customerId: string,
  subscriptionId: string,
): Promise<{ period: Period; error: RatingError } | undefined> {
  // closePeriod's lock: two subscriptions of the customer written at once are rated together
  // (the second reads the first once it is committed), and no close runs in between.
  await tx`SELECT pg_advisory_xact_lock(hashtextextended(${`invoice-close:${tenantId}:${customerId}`}, 0))`;
  const subscriptions = await customerSubscriptions(tx, tenantId, customerId);
  const written = subscriptions.find((s) => s.id === subscriptionId);
  if (!written) throw new Error(`subscription ${subscriptionId} of customer ${customerId} does not exist`);
  const from = written.effective_from.getTime();
  const starts = [from, ...subscriptions.filter((s) => s.effective_from.getTime() > from && s.effective_from.getTime() < endOf(written)).map((s) => s.effective_from.getTime())];
  const periods = new Map<number, Period>();
  for (const at of starts) {
    const period = periodContaining(written.billing_period, written.anchor.getTime(), at);
    periods.set(period.start, period);
  }
  // Plans read in this transaction: the subscription written is not committed yet.
  const plans = new PlanCache(tx as unknown as Sql);
  for (const period of [...periods.values()].sort((a, b) => a.start - b.start)) {
    const members = membersOf(subscriptions, period);
    try {
      ratePeriod(await subscriptionPeriods(plans, tenantId, members, () => []));
    } catch (error) {
      if (error instanceof RatingError) return { period, error };
      throw error;
    }
  }
  return undefined;
}

/**
 * The draft invoice of a customer for the billing period containing `at`: every subscription
 * of the customer (or of its teams, agents and apps) billed by that period, its stored usage
 * rows as invoice-rollup left them, its terms, rated by the rating engine. Computed on each
 * read, so it is current to the last ledgered event. Undefined when the customer has no
 * subscription in the period.
 */
export async function draftInvoice(sql: Sql, plans: PlanCache, tenantId: string, customerId: string, at: number): Promise<DraftInvoice | undefined> {
  const subscriptions = await customerSubscriptions(sql, tenantId, customerId);
  const period = invoicePeriodAt(subscriptions, at);
  if (!period) return undefined;
  const members = membersOf(subscriptions, period);
  return {
    customerId,
    periodStart: period.start,
    periodEnd: period.end,
    subscriptionIds: members.map((s) => s.id),
    invoice: await rateMembers(sql, plans, tenantId, period, members),
  };
}

// --- closed invoices

/** One line of a closed invoice or credit note, as stored and served (money as decimal strings). */
export interface DocumentLine {
  step: number;
  code: string;
  subscription_id?: string;
  commitment_group?: string;
  description: string;
  rule: string;
  quantity: string;
  unit_price: string;
  amount_nano: string;
  amount: string;
  /** Adjustment lines: the period and invoice they belong to. */
  period_start?: string;
  period_end?: string;
  adjusts_invoice?: string;
}

export interface InvoiceDocument {
  id: string;
  kind: 'invoice' | 'credit_note';
  number: string;
  status: 'closed';
  customer_id: string;
  period_start: string;
  period_end: string;
  issued_at: string;
  currency: string;
  minor_unit_digits: number;
  rounding: string;
  subscription_ids: string[];
  plan_versions: { subscription_id: string; rate_plan_id: string; rate_plan_version: number; rate_plan_version_id: string }[];
  lines: DocumentLine[];
  /** Sum of the rounded usage lines (step 1) of the period. */
  subtotal: string;
  /** Sum of the rounded lines of the period itself; adjustments to earlier periods; both. */
  period_total: string;
  adjustments_total: string;
  total: string;
  total_exact: string;
  credits_applied: string;
  amount_due: string;
  /** A credit note: the invoice whose period it corrects. */
  corrects_invoice?: string;
  /**
   * An invoice whose total is below zero (adjustments that gave back more than the period bills):
   * what the customer is owed, carried to its next invoice in this currency as a `credit_carried`
   * line (its amount_due is 0).
   */
  credit_carried_forward?: string;
  /** The invoices whose credit this one took (its `credit_carried` lines). */
  credit_carried_from?: string[];
}

/** What is settled per line of a period: keyed by subscription, code and rule. */
interface SettledLine {
  key: string;
  description: string;
  rule: string;
  step: number;
  code: string;
  subscription_id?: string;
  amount_nano: string;
  rounded_nano: string;
}

const lineKey = (l: { subscription_id?: string; code: string; rule: string; commitment_group?: string }) =>
  `${l.subscription_id ?? ''}|${l.code}|${l.rule}|${l.commitment_group ?? ''}`;

function settledLinesOf(invoice: Invoice): SettledLine[] {
  const byKey = new Map<string, SettledLine>();
  for (const line of invoice.lines) {
    const key = lineKey(line);
    // The line as shown (rounded; a credit line may give back what rounding added, see ratePeriod).
    const rounded = parseNano(line.amount);
    const known = byKey.get(key);
    if (known) {
      known.amount_nano = (BigInt(known.amount_nano) + line.amount_nano).toString();
      known.rounded_nano = (BigInt(known.rounded_nano) + rounded).toString();
      continue;
    }
    byKey.set(key, {
      key,
      description: line.description,
      rule: line.rule,
      step: line.step,
      code: line.code,
      subscription_id: line.subscription_id,
      amount_nano: line.amount_nano.toString(),
      rounded_nano: rounded.toString(),
    });
  }
  return [...byKey.values()];
}

function documentLine(line: InvoiceLine): DocumentLine {
  return { ...line, amount_nano: line.amount_nano.toString() };
}

const money = (nano: bigint, digits: number) => formatNano(roundToMinorUnit(nano, digits), digits);

async function nextNumber(tx: TransactionSql, tenantId: string, kind: 'invoice' | 'credit_note'): Promise<string> {
  const [row] = await tx<{ last_number: string }[]>`
    INSERT INTO invoice_sequences (tenant_id, kind, last_number) VALUES (${tenantId}, ${kind}, 1)
    ON CONFLICT (tenant_id, kind) DO UPDATE SET last_number = invoice_sequences.last_number + 1
    RETURNING last_number`;
  return `${kind === 'invoice' ? 'INV' : 'CN'}-${row.last_number.padStart(6, '0')}`;
}

/**
 * Locks the period positions of these subscriptions (invoice-rollup and corrections take the
 * same rows FOR UPDATE), so the usage read next cannot move until this transaction ends, and
 * returns their event count: the version of the period's usage.
 */
async function lockPeriodUsage(tx: TransactionSql, tenantId: string, subscriptionIds: string[], periodStart: Date): Promise<bigint> {
  const rows = await tx<{ events: string }[]>`
    SELECT events FROM invoice_period_calls
    WHERE tenant_id = ${tenantId} AND subscription_id = ANY(${subscriptionIds}) AND period_start = ${periodStart}
    ORDER BY tenant_id, subscription_id, period_start
    FOR SHARE`;
  return rows.reduce((sum, r) => sum + BigInt(r.events), 0n);
}

/**
 * Locks, in one statement and in the order invoice-rollup locks them (tenant, subscription,
 * period), every period position a close reads: taken one period after the other, a close and a
 * rollup batch spanning two periods could each hold what the other waits for.
 */
async function lockAllPeriods(tx: TransactionSql, tenantId: string, keys: { subscriptionId: string; periodStart: Date }[]): Promise<void> {
  if (keys.length === 0) return;
  await tx`
    SELECT 1 FROM invoice_period_calls p
    JOIN unnest(${keys.map((k) => k.subscriptionId)}::text[], ${keys.map((k) => k.periodStart.toISOString())}::timestamptz[]) AS k(s, ps)
      ON p.tenant_id = ${tenantId} AND p.subscription_id = k.s AND p.period_start = k.ps
    ORDER BY p.tenant_id, p.subscription_id, p.period_start
    FOR SHARE OF p`;
}

/** Prepaid credits drawn by the usage of these subscriptions in the period (positive). */
async function creditsConsumed(db: Db, tenantId: string, subscriptionIds: string[], periodStart: Date): Promise<bigint> {
  const [row] = await db<{ consumed: string }[]>`
    SELECT coalesce(-sum(amount_nano), 0)::text AS consumed FROM credit_movements
    WHERE tenant_id = ${tenantId} AND subscription_id = ANY(${subscriptionIds}) AND period_start = ${periodStart}
      AND kind IN ('consumed', 'returned')`;
  return BigInt(row.consumed);
}

interface ClosedInvoiceRow {
  id: string;
  number: string;
  customer_id: string;
  period_start: Date;
  period_end: Date;
  subscription_ids: string[];
  currency: string;
  settled_lines: SettledLine[];
  settled_credits_nano: string;
  settled_events: string;
}

interface Adjustment {
  invoice: ClosedInvoiceRow;
  lines: DocumentLine[];
  roundedNano: bigint;
  exactNano: bigint;
  creditsNano: bigint;
  settled: SettledLine[];
  settledCredits: bigint;
  events: bigint;
}

/**
 * What is still to bill for a closed period: the period rated again (late events, corrections)
 * minus what its invoice and later adjustments billed, line by line; and credits drawn since.
 * Locks the period's usage. Undefined when nothing changed.
 */
async function adjustmentFor(tx: TransactionSql, plans: PlanCache, tenantId: string, closed: ClosedInvoiceRow, force = false): Promise<Adjustment | undefined> {
  const periodStart = closed.period_start;
  const events = await lockPeriodUsage(tx, tenantId, closed.subscription_ids, periodStart);
  if (!force && events === BigInt(closed.settled_events)) return undefined;
  const subscriptions = (await customerSubscriptions(tx, tenantId, closed.customer_id)).filter((s) => closed.subscription_ids.includes(s.id));
  const period = { start: periodStart.getTime(), end: closed.period_end.getTime() };
  const rerated = await rateMembers(tx, plans, tenantId, period, subscriptions);
  const digits = rerated.minor_unit_digits;
  const now = settledLinesOf(rerated);
  const before = new Map(closed.settled_lines.map((l) => [l.key, l]));
  const label = periodLabel(period);
  const lines: DocumentLine[] = [];
  let roundedNano = 0n;
  let exactNano = 0n;
  const keys = new Set([...now.map((l) => l.key), ...before.keys()]);
  const current = new Map(now.map((l) => [l.key, l]));
  for (const key of keys) {
    const a = current.get(key);
    const b = before.get(key);
    const exact = BigInt(a?.amount_nano ?? '0') - BigInt(b?.amount_nano ?? '0');
    const rounded = BigInt(a?.rounded_nano ?? '0') - BigInt(b?.rounded_nano ?? '0');
    if (exact === 0n && rounded === 0n) continue;
    const ref = (a ?? b)!;
    roundedNano += rounded;
    exactNano += exact;
    lines.push({
      step: 9,
      code: 'adjustment',
      subscription_id: ref.subscription_id,
      description: `Adjustment to ${closed.number} (period ${label}): ${ref.code}, now ${a?.description ?? 'no longer billed'}`,
      rule: ref.rule,
      quantity: '1',
      unit_price: formatNano(exact),
      amount_nano: exact.toString(),
      amount: formatNano(rounded, digits),
      period_start: periodStart.toISOString(),
      period_end: closed.period_end.toISOString(),
      adjusts_invoice: closed.number,
    });
  }
  const credits = await creditsConsumed(tx, tenantId, closed.subscription_ids, periodStart);
  const creditsNano = credits - BigInt(closed.settled_credits_nano);
  if (lines.length === 0 && creditsNano === 0n && !force) {
    // Events moved without changing an amount: record the new version only.
    await tx`UPDATE invoice_settlements SET settled_events = ${events.toString()}, settled_at = clock_timestamp()
             WHERE tenant_id = ${tenantId} AND invoice_id = ${closed.id}`;
    return undefined;
  }
  return { invoice: closed, lines, roundedNano, exactNano, creditsNano, settled: now, settledCredits: credits, events };
}

async function settle(tx: TransactionSql, tenantId: string, adjustment: Adjustment): Promise<void> {
  await tx`
    UPDATE invoice_settlements
    SET settled_lines = ${tx.json(adjustment.settled as never)}, settled_credits_nano = ${adjustment.settledCredits.toString()},
        settled_events = ${adjustment.events.toString()}, settled_at = clock_timestamp()
    WHERE tenant_id = ${tenantId} AND invoice_id = ${adjustment.invoice.id}`;
}

async function closedInvoices(tx: TransactionSql, tenantId: string, customerId: string, filter: { before?: Date; id?: string }): Promise<ClosedInvoiceRow[]> {
  return tx<ClosedInvoiceRow[]>`
    SELECT i.id, i.number, i.customer_id, i.period_start, i.period_end, i.subscription_ids, i.currency,
           st.settled_lines, st.settled_credits_nano::text, st.settled_events::text
    FROM invoices i JOIN invoice_settlements st ON st.tenant_id = i.tenant_id AND st.invoice_id = i.id
    WHERE i.tenant_id = ${tenantId} AND i.customer_id = ${customerId} AND i.kind = 'invoice'
      ${filter.before ? tx`AND i.period_end <= ${filter.before}` : tx``}
      ${filter.id ? tx`AND i.id = ${filter.id}` : tx``}
    ORDER BY i.period_start, i.id`;
}

async function insertDocument(tx: TransactionSql, tenantId: string, doc: InvoiceDocument, totalNano: bigint, correctsInvoiceId?: string): Promise<void> {
  await tx`
    INSERT INTO invoices (tenant_id, id, kind, number, customer_id, period_start, period_end, issued_at, currency,
                          subscription_ids, total_nano, corrects_invoice_id, document)
    VALUES (${tenantId}, ${doc.id}, ${doc.kind}, ${doc.number}, ${doc.customer_id}, ${doc.period_start}, ${doc.period_end},
            ${doc.issued_at}, ${doc.currency}, ${doc.subscription_ids}, ${totalNano.toString()}, ${correctsInvoiceId ?? null},
            ${tx.json(doc as never)})`;
}

const ROUNDING = 'each line rounded to the minor unit, half away from zero; totals are sums of rounded lines';

/** A customer's credit carried forward and not yet taken by a later invoice: which invoice, and how much (nano, > 0). */
interface CarriedCredit {
  number: string;
  nano: bigint;
}

/**
 * The credits a customer's invoices in one currency carried forward that no invoice has taken
 * yet (at most one in practice: each close takes all there are).
 */
export async function creditsCarried(db: Db, tenantId: string, customerId: string, currency: string): Promise<CarriedCredit[]> {
  const rows = await db<{ number: string; carried: string }[]>`
    SELECT i.number, i.document->>'credit_carried_forward' AS carried
    FROM invoices i
    WHERE i.tenant_id = ${tenantId} AND i.customer_id = ${customerId} AND i.kind = 'invoice' AND i.currency = ${currency}
      AND i.document ? 'credit_carried_forward'
      AND NOT EXISTS (
        SELECT 1 FROM invoices j
        WHERE j.tenant_id = i.tenant_id AND j.customer_id = i.customer_id AND j.kind = 'invoice'
          AND j.document->'credit_carried_from' ? i.number)
    ORDER BY i.issued_at, i.id`;
  return rows.map((r) => ({ number: r.number, nano: parseNano(r.carried) }));
}

const carriedLine = (carried: CarriedCredit, digits: number): DocumentLine => ({
  step: 10,
  code: 'credit_carried',
  description: `Credit carried from ${carried.number}`,
  rule: `${carried.number}.credit_carried_forward`,
  quantity: '1',
  unit_price: formatNano(-carried.nano),
  amount_nano: (-carried.nano).toString(),
  amount: formatNano(-carried.nano, digits),
});

export type CloseOutcome = { status: 'closed'; invoice: InvoiceDocument } | { status: 'already_closed'; invoiceId: string } | { status: 'no_subscription' };

/**
 * Closes a customer's billing period: freezes its invoice (number from the tenant's sequence,
 * the period's lines rated from its usage, adjustments for earlier closed periods that changed
 * since, credits applied), in one transaction. Exactly once: closes of one customer are
 * serialized by an advisory lock and the second finds the invoice; the unique index on
 * (customer, period) is the last guard. A crash before the commit leaves nothing behind.
 */
export async function closePeriod(
  sql: Sql,
  plans: PlanCache,
  tenantId: string,
  customerId: string,
  period: Period,
  options: { issuedAt?: Date; beforeCommit?: () => Promise<void> } = {},
): Promise<CloseOutcome> {
  const issuedAt = options.issuedAt ?? new Date();
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(hashtextextended(${`invoice-close:${tenantId}:${customerId}`}, 0))`;
    const [existing] = await tx<{ id: string }[]>`
      SELECT id FROM invoices WHERE tenant_id = ${tenantId} AND customer_id = ${customerId} AND kind = 'invoice'
        AND period_start = ${new Date(period.start)} AND period_end = ${new Date(period.end)}`;
    if (existing) return { status: 'already_closed', invoiceId: existing.id };
    const members = membersOf(await customerSubscriptions(tx, tenantId, customerId), period);
    if (members.length === 0) return { status: 'no_subscription' };
    const memberIds = members.map((s) => s.id);
    const earlier = await closedInvoices(tx, tenantId, customerId, { before: new Date(period.start) });
    await lockAllPeriods(tx, tenantId, [
      ...memberIds.map((id) => ({ subscriptionId: id, periodStart: new Date(period.start) })),
      ...earlier.flatMap((c) => c.subscription_ids.map((id) => ({ subscriptionId: id, periodStart: c.period_start }))),
    ]);
    const events = await lockPeriodUsage(tx, tenantId, memberIds, new Date(period.start));
    const rated = await rateMembers(tx, plans, tenantId, period, members);
    const digits = rated.minor_unit_digits;

    const adjustments: Adjustment[] = [];
    for (const closed of earlier) {
      // A period closed in another currency (the customer changed plans) cannot be added to this
      // invoice: what changed in it since is settled now on a note of its own, in its currency.
      if (closed.currency !== rated.currency) await issueCreditNote(tx, plans, tenantId, customerId, closed.id);
      else {
        const adjustment = await adjustmentFor(tx, plans, tenantId, closed);
        if (adjustment) adjustments.push(adjustment);
      }
    }
    const credits = await creditsConsumed(tx, tenantId, memberIds, new Date(period.start));
    const carried = await creditsCarried(tx, tenantId, customerId, rated.currency);
    const periodRounded = parseNano(rated.total);
    const adjustmentsRounded = adjustments.reduce((sum, a) => sum + a.roundedNano, 0n);
    const carriedRounded = carried.reduce((sum, c) => sum + c.nano, 0n);
    const total = periodRounded + adjustmentsRounded - carriedRounded;
    const creditsApplied = roundToMinorUnit(credits + adjustments.reduce((sum, a) => sum + a.creditsNano, 0n), digits);
    const lines: DocumentLine[] = [
      ...rated.lines.map(documentLine),
      ...adjustments.flatMap((a) => a.lines),
      ...carried.map((c) => carriedLine(c, digits)),
    ];
    const doc: InvoiceDocument = {
      id: newId('inv'),
      kind: 'invoice',
      number: await nextNumber(tx, tenantId, 'invoice'),
      status: 'closed',
      customer_id: customerId,
      period_start: new Date(period.start).toISOString(),
      period_end: new Date(period.end).toISOString(),
      issued_at: issuedAt.toISOString(),
      currency: rated.currency,
      minor_unit_digits: digits,
      rounding: ROUNDING,
      subscription_ids: memberIds,
      plan_versions: members.map((s) => ({
        subscription_id: s.id,
        rate_plan_id: s.rate_plan_id,
        rate_plan_version: s.rate_plan_version,
        rate_plan_version_id: s.rate_plan_version_id,
      })),
      lines,
      subtotal: rated.subtotal,
      period_total: rated.total,
      adjustments_total: formatNano(adjustmentsRounded, digits),
      total: formatNano(total, digits),
      total_exact: formatNano(rated.total_nano + adjustments.reduce((sum, a) => sum + a.exactNano, 0n) - carriedRounded),
      credits_applied: formatNano(creditsApplied, digits),
      amount_due: money(total > creditsApplied ? total - creditsApplied : 0n, digits),
      ...(carried.length ? { credit_carried_from: carried.map((c) => c.number) } : {}),
      // Below zero, the customer is owed the difference: the next invoice takes it off.
      ...(total < 0n ? { credit_carried_forward: formatNano(-total, digits) } : {}),
    };
    await insertDocument(tx, tenantId, doc, total);
    await tx`
      INSERT INTO invoice_settlements (tenant_id, invoice_id, settled_lines, settled_credits_nano, settled_events)
      VALUES (${tenantId}, ${doc.id}, ${tx.json(settledLinesOf(rated) as never)}, ${credits.toString()}, ${events.toString()})`;
    for (const adjustment of adjustments) await settle(tx, tenantId, adjustment);
    // In this transaction: the notice exists exactly when the invoice does.
    await enqueueWebhookEvent(tx, tenantId, 'invoice.closed', { invoice_id: doc.id, number: doc.number, customer_id: customerId }, `invoice.closed:${doc.id}`);
    await options.beforeCommit?.();
    return { status: 'closed', invoice: doc };
  });
}

/**
 * A credit note for a closed period that changed (a correction): what is still to bill, as a
 * document of its own with its number from the tenant's credit-note sequence, settled at once so
 * the next invoice does not bill it again. Undefined when nothing changed. Runs in the caller's
 * transaction (the correction's).
 */
export async function issueCreditNote(tx: TransactionSql, plans: PlanCache, tenantId: string, customerId: string, invoiceId: string): Promise<InvoiceDocument | undefined> {
  await tx`SELECT pg_advisory_xact_lock(hashtextextended(${`invoice-close:${tenantId}:${customerId}`}, 0))`;
  const [closed] = await closedInvoices(tx, tenantId, customerId, { id: invoiceId });
  if (!closed) return undefined;
  const adjustment = await adjustmentFor(tx, plans, tenantId, closed);
  if (!adjustment) return undefined;
  const digits = minorUnitDigits(closed.currency);
  const credits = roundToMinorUnit(adjustment.creditsNano, digits);
  const doc: InvoiceDocument = {
    id: newId('cn'),
    kind: 'credit_note',
    number: await nextNumber(tx, tenantId, 'credit_note'),
    status: 'closed',
    customer_id: customerId,
    period_start: closed.period_start.toISOString(),
    period_end: closed.period_end.toISOString(),
    issued_at: new Date().toISOString(),
    currency: closed.currency,
    minor_unit_digits: digits,
    rounding: ROUNDING,
    subscription_ids: closed.subscription_ids,
    plan_versions: [],
    lines: adjustment.lines,
    subtotal: formatNano(0n, digits),
    period_total: formatNano(0n, digits),
    adjustments_total: formatNano(adjustment.roundedNano, digits),
    total: formatNano(adjustment.roundedNano, digits),
    total_exact: formatNano(adjustment.exactNano),
    credits_applied: formatNano(credits, digits),
    amount_due: money(adjustment.roundedNano - credits > 0n ? adjustment.roundedNano - credits : 0n, digits),
    corrects_invoice: closed.number,
  };
  await insertDocument(tx, tenantId, doc, adjustment.roundedNano, closed.id);
  await settle(tx, tenantId, adjustment);
  return doc;
}

/** The closed invoice of a subscription's period, if it was closed. */
export async function closedInvoiceOf(db: Db, tenantId: string, subscriptionId: string, periodStart: Date): Promise<{ id: string; number: string } | undefined> {
  const [row] = await db<{ id: string; number: string }[]>`
    SELECT id, number FROM invoices
    WHERE tenant_id = ${tenantId} AND kind = 'invoice' AND period_start = ${periodStart} AND ${subscriptionId} = ANY(subscription_ids)`;
  return row;
}

/**
 * Adjustment lines the next invoice of a customer would carry now (closed periods that changed
 * since they were billed), for the draft: computed, not settled (the transaction is rolled back).
 * With `currency`, only those of periods closed in it: the others go on notes of their own when
 * the next period closes (closePeriod).
 */
export async function pendingAdjustments(
  sql: Sql,
  plans: PlanCache,
  tenantId: string,
  customerId: string,
  before: Date,
  currency?: string,
): Promise<DocumentLine[]> {
  const lines: DocumentLine[] = [];
  await sql
    .begin(async (tx) => {
      const closedList = (await closedInvoices(tx, tenantId, customerId, { before })).filter((c) => currency === undefined || c.currency === currency);
      await lockAllPeriods(tx, tenantId, closedList.flatMap((c) => c.subscription_ids.map((id) => ({ subscriptionId: id, periodStart: c.period_start }))));
      for (const closed of closedList) {
        const adjustment = await adjustmentFor(tx, plans, tenantId, closed);
        if (adjustment) lines.push(...adjustment.lines);
      }
      throw new RollBack();
    })
    .catch((err) => {
      if (!(err instanceof RollBack)) throw err;
    });
  return lines;
}

class RollBack extends Error {}

// --- reading closed documents

export interface InvoiceSummary {
  id: string;
  kind: 'invoice' | 'credit_note';
  number: string;
  period_start: string;
  period_end: string;
  issued_at: string;
  currency: string;
  total: string;
  amount_due: string;
}

/** A customer's closed invoices and credit notes, newest first, `limit` a page after `cursor` (an id). */
export async function listInvoices(sql: Sql, tenantId: string, customerId: string, limit: number, before?: { issuedAt: Date; id: string }): Promise<InvoiceSummary[]> {
  const rows = await sql<{ document: InvoiceDocument }[]>`
    SELECT document FROM invoices
    WHERE tenant_id = ${tenantId} AND customer_id = ${customerId}
      ${before ? sql`AND (issued_at, id) < (${before.issuedAt}, ${before.id})` : sql``}
    ORDER BY issued_at DESC, id DESC LIMIT ${limit}`;
  return rows.map(({ document: d }) => ({
    id: d.id,
    kind: d.kind,
    number: d.number,
    period_start: d.period_start,
    period_end: d.period_end,
    issued_at: d.issued_at,
    currency: d.currency,
    total: d.total,
    amount_due: d.amount_due,
  }));
}

export async function getInvoice(sql: Sql, tenantId: string, customerId: string, id: string): Promise<InvoiceDocument | undefined> {
  const [row] = await sql<{ document: InvoiceDocument }[]>`
    SELECT document FROM invoices WHERE tenant_id = ${tenantId} AND customer_id = ${customerId} AND (id = ${id} OR number = ${id})`;
  return row?.document;
}

// --- which periods are due

export interface DueClose {
  tenantId: string;
  customerId: string;
  period: Period;
}

/**
 * The customer periods whose end plus the grace has passed and that have no invoice yet,
 * looking back `lookbackMs` from now (older periods are left to an explicit close).
 */
export async function duePeriods(sql: Sql, options: { now: number; graceMs: number; lookbackMs: number; tenantId?: string; customerId?: string }): Promise<DueClose[]> {
  const closeable = options.now - options.graceMs;
  const from = options.now - options.lookbackMs;
  const subscriptions = await sql<(SubscriptionInfo & { tenant_id: string; customer_id: string })[]>`
    SELECT s.tenant_id, s.customer_id, s.id, s.billing_period, coalesce(s.billing_anchor, s.effective_from) AS anchor, s.effective_from, s.effective_to
    FROM subscriptions s
    WHERE s.effective_from < ${new Date(closeable)} AND (s.effective_to IS NULL OR s.effective_to > ${new Date(from)})
      ${options.tenantId ? sql`AND s.tenant_id = ${options.tenantId}` : sql``}
      ${options.customerId ? sql`AND s.customer_id = ${options.customerId}` : sql``}`;
  const due = new Map<string, DueClose>();
  for (const s of subscriptions) {
    const start = Math.max(s.effective_from.getTime(), from);
    const end = Math.min(endOf(s), closeable);
    for (const period of periodsBetween(s.billing_period, s.anchor.getTime(), start, end)) {
      if (period.end > closeable || period.end <= from) continue;
      due.set(`${s.tenant_id}\u0000${s.customer_id}\u0000${period.start}\u0000${period.end}`, { tenantId: s.tenant_id, customerId: s.customer_id, period });
    }
  }
  if (due.size === 0) return [];
  const list = [...due.values()];
  const closed = await sql<{ tenant_id: string; customer_id: string; period_start: Date; period_end: Date }[]>`
    SELECT i.tenant_id, i.customer_id, i.period_start, i.period_end FROM invoices i
    JOIN unnest(${list.map((d) => d.tenantId)}::text[], ${list.map((d) => d.customerId)}::text[]) AS k(tenant_id, customer_id)
      ON i.tenant_id = k.tenant_id AND i.customer_id = k.customer_id
    WHERE i.kind = 'invoice' AND i.period_end > ${new Date(from)}`;
  const done = new Set(closed.map((c) => `${c.tenant_id}\u0000${c.customer_id}\u0000${c.period_start.getTime()}\u0000${c.period_end.getTime()}`));
  return list
    .filter((d) => !done.has(`${d.tenantId}\u0000${d.customerId}\u0000${d.period.start}\u0000${d.period.end}`))
    .sort((a, b) => a.period.start - b.period.start || a.customerId.localeCompare(b.customerId));
}

/**
 * Closes every due period (oldest first). Returns what it closed. A period that cannot be rated
 * (a plan that no longer validates, subscriptions of one invoice in two currencies) is reported
 * to onError and left for the next round; the others close all the same.
 */
export async function closeDuePeriods(
  sql: Sql,
  plans: PlanCache,
  options: { now: number; graceMs: number; lookbackMs: number; tenantId?: string; customerId?: string },
  onError?: (due: DueClose, error: unknown) => void,
): Promise<InvoiceDocument[]> {
  const closed: InvoiceDocument[] = [];
  for (const due of await duePeriods(sql, options)) {
    try {
      const outcome = await closePeriod(sql, plans, due.tenantId, due.customerId, due.period);
      if (outcome.status === 'closed') closed.push(outcome.invoice);
    } catch (error) {
      if (!onError) throw error;
      onError(due, error);
    }
  }
  return closed;
}
