import { z } from 'zod';
import type { WebhookEventType } from '../domain/webhooks.js';

/**
 * What each webhook event carries in `data`, for the OpenAPI document's `webhooks` section.
 * Amounts are decimal strings in the major unit of `currency`.
 */
const amount = z.string().meta({ description: 'Decimal amount in the major unit of the currency.' });
const capData = {
  cap_id: z.string(),
  scope_kind: z.string().meta({ description: 'agent, team or customer.' }),
  scope_id: z.string(),
  period: z.string().meta({ description: 'session, day or month.' }),
  period_key: z.string().meta({ description: 'The period: 2026-03, 2026-03-31, or s:<session id>.' }),
  action: z.string().meta({ description: 'pause (a hard cap) or alert (a soft cap).' }),
  limit: amount,
  spent: amount.meta({ description: "The cap's running total when the alert was raised." }),
  currency: z.string(),
  customer_id: z.string(),
  event_id: z.string().meta({ description: 'The usage event with which the alert was seen.' }),
};

export const WEBHOOK_EVENT_DATA: Record<WebhookEventType, { description: string; data: z.ZodType }> = {
  'cap.threshold_reached': {
    description: "A spend cap's running total reached one of the tenant's thresholds (alert settings; 50, 80 and 100 % by default). Once per cap, period, limit and threshold.",
    data: z.looseObject({ ...capData, threshold_percent: z.number() }),
  },
  'commitment.threshold_reached': {
    description:
      "The calls of a committed plan's period (a customer's subscriptions on one COMMITTED rate plan) reached one of the tenant's thresholds of the committed calls: beyond 100 %, calls are overage. Once per customer, plan, period, commitment and threshold.",
    data: z.looseObject({
      customer_id: z.string(),
      subscription_id: z.string(),
      rate_plan_id: z.string(),
      period_start: z.string(),
      period_end: z.string(),
      committed_calls: z.string(),
      calls: z.string(),
      threshold_percent: z.number(),
      event_id: z.string(),
    }),
  },
  'cap.paused': {
    description: 'A hard cap paused its scope: POST /v1/authorize refuses it until the pause is lifted.',
    data: z.looseObject({ cap_id: z.string(), scope_kind: z.string(), scope_id: z.string(), period_key: z.string(), limit: amount }),
  },
  'cap.lifted': {
    description: 'A pause was lifted (by the admin API, a raised or disabled cap, or the end of the period), with who or what lifted it.',
    data: z.looseObject({
      cap_id: z.string(),
      scope_kind: z.string(),
      scope_id: z.string(),
      period_key: z.string(),
      lifted_by: z.enum(['admin', 'cap_raised', 'cap_disabled', 'period_rollover']),
      lifted_by_token_id: z.string().nullable().meta({ description: 'With lifted_by admin: the id of the admin token that lifted it.' }),
      lift_reason: z.string().nullable(),
      lifted_at: z.string(),
    }),
  },
  'spend.velocity_spike': {
    description:
      "A customer's (or one agent's) spend in the last hour passed the velocity factor times its trailing 7-day hourly average, and the minimum amount. Once per scope and hour.",
    data: z.looseObject({
      scope_kind: z.enum(['customer', 'agent']),
      scope_id: z.string(),
      customer_id: z.string(),
      hour_start: z.string(),
      last_hour_spend: amount,
      trailing_hourly_average: amount,
      factor: z.number(),
      currency: z.string(),
      event_id: z.string(),
    }),
  },
  'invoice.closed': {
    description: "A billing period closed: its invoice is frozen with its number (GET /v1/customers/{id}/invoices/{invoice} has it). Once per invoice.",
    data: z.looseObject({ invoice_id: z.string(), number: z.string(), customer_id: z.string() }),
  },
  'credits.exhausted': {
    description: "A customer's prepaid credits in a currency ran out: the customer is paused (authorize refuses it) until a new grant.",
    data: z.looseObject({ customer_id: z.string(), currency: z.string(), event_id: z.string() }),
  },
  'webhook.test': {
    description: 'Sent by POST /v1/admin/webhook-endpoints/{id}/test to that endpoint alone, to check that it receives and verifies deliveries.',
    data: z.looseObject({ endpoint_id: z.string(), message: z.string() }),
  },
  'session.projection_exceeded': {
    description: "A running session's spend, carried ahead at its rate so far for the projection horizon, passes a per-session cap it has not reached. Once per cap and session.",
    data: z.looseObject({
      ...capData,
      session_id: z.string(),
      session_started_at: z.string(),
      projected: amount,
      horizon_seconds: z.number(),
    }),
  },
};
