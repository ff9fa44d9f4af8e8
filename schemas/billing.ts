import { z } from 'zod';
import { MAX_BIGINT, decimalAmount, isoTimestamp as timestamp } from '../domain/validation.js';

/** Wire schemas of the billing lifecycle's admin routes: period close, corrections, credits, backfill. */

const ref = (noun: string) => z.string().min(1).max(128).meta({ description: `Id of the ${noun}.` });

export const closePeriodsRequest = z.strictObject({
  customer_id: ref('customer').optional().meta({ description: 'Only this customer; every customer of the tenant when omitted.' }),
  at: timestamp.optional().meta({ description: 'Close as if it were this time (now by default, never later): periods that ended before it minus the grace.' }),
  grace_seconds: z.number().int().min(0).max(90 * 86_400).optional().meta({ description: 'Grace after the period end; PERIOD_CLOSE_GRACE_SECONDS by default.' }),
  lookback_days: z.number().int().min(1).max(3660).optional().meta({ description: 'How far back to look for periods without an invoice (62 by default).' }),
});

export const invoiceDocumentOut = z.looseObject({
  id: z.string(),
  kind: z.enum(['invoice', 'credit_note']),
  number: z.string(),
  status: z.literal('closed'),
  customer_id: z.string(),
  period_start: z.string(),
  period_end: z.string(),
  issued_at: z.string(),
  currency: z.string(),
  lines: z.array(z.looseObject({})),
  total: z.string(),
  credits_applied: z.string(),
  amount_due: z.string(),
});

export const closePeriodsReply = z.object({ closed: z.array(invoiceDocumentOut) });

export const creditGrantCreate = z.strictObject({
  amount: decimalAmount({ positive: true }).meta({ description: 'Decimal amount in the major unit of the currency.' }),
  currency: z.string().regex(/^[A-Z]{3}$/, 'an ISO 4217 code in capitals, e.g. USD'),
  source: z.enum(['purchase', 'promotion']),
  priority: z.number().int().min(0).max(1_000_000).optional().meta({ description: 'Drawn lowest first (default 100); then the earliest expiry, then the oldest grant.' }),
  expires_at: timestamp.optional().meta({ description: 'After it the grant is not drawn and what it has left expires.' }),
  description: z.string().max(500).optional(),
  hard_cap: z
    .boolean()
    .optional()
    .meta({ description: "Whether a zero balance in this currency pauses the customer (authorize refuses it) until a new grant; on by default, kept when omitted." }),
});

const grantOut = z.object({
  id: z.string(),
  customer_id: z.string(),
  currency: z.string(),
  amount: z.string(),
  remaining: z.string(),
  priority: z.number(),
  source: z.enum(['purchase', 'promotion']),
  expires_at: z.string().nullable(),
  description: z.string().nullable(),
  created_at: z.string(),
});
export const creditGrantOut = grantOut;

export const creditsOut = z.object({
  customer_id: z.string(),
  balances: z.array(z.object({ currency: z.string(), balance: z.string(), hard_cap: z.boolean(), paused: z.boolean() })),
  grants: z.array(grantOut),
});

export const creditMovementsQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z
    .string()
    .regex(/^\d{1,19}$/)
    .refine((value) => BigInt(value) <= MAX_BIGINT, 'not a cursor this API gave')
    .optional()
    .meta({ description: 'The `next_cursor` of the previous page.' }),
});

export const creditMovementsOut = z.object({
  data: z.array(
    z.object({
      id: z.string(),
      grant_id: z.string(),
      kind: z.enum(['granted', 'consumed', 'returned', 'expired']),
      amount: z.string(),
      subscription_id: z.string().nullable(),
      period_start: z.string().nullable(),
      event_id: z.string().nullable(),
      created_at: z.string(),
    }),
  ),
  next_cursor: z.string().nullable(),
});

const settle = z
  .enum(['next_invoice', 'credit_note'])
  .optional()
  .meta({ description: "When the event's period is already closed: an adjustment on the next invoice (default) or a credit note now." });
const reason = z.string().max(500).optional().meta({ description: 'Kept in the correction log.' });
const quantity = z.number().int().min(0).max(1_000_000_000_000);

export const voidRequest = z.strictObject({ reason, settle });

export const amendRequest = z.strictObject({
  quantities: z
    .strictObject({
      input_tokens: quantity.optional(),
      output_tokens: quantity.optional(),
      execution_duration_ms: quantity.optional(),
    })
    .refine((q) => Object.values(q).some((v) => v !== undefined), { message: 'name at least one of input_tokens, output_tokens, execution_duration_ms' })
    .meta({ description: 'The corrected quantities; those not named keep their value.' }),
  reason,
  settle,
});

export const correctionOut = z.object({
  id: z.string(),
  event_id: z.string(),
  kind: z.enum(['void', 'amend']),
  reversal_event_id: z.string(),
  amendment_event_id: z.string().nullable(),
  delta: z.string().meta({ description: "The amendment's cost minus the reversed row's, in the currency's major unit." }),
  subscription_id: z.string(),
  period_start: z.string(),
  closed_invoice: z.string().nullable().meta({ description: 'The number of the invoice of the period, when it was already closed.' }),
  credit_note: invoiceDocumentOut.nullable(),
});
