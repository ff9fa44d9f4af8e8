import { z } from 'zod';

/** Wire schemas of the billing lifecycle's admin routes: period close, corrections, credits, backfill. */

const ref = (noun: string) => z.string().min(1).max(128).meta({ description: `Id of the ${noun}.` });
const timestamp = z.iso.datetime({ offset: true }).meta({ description: 'RFC 3339 timestamp with offset.' });

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
