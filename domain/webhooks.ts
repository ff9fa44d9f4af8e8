import { createHmac, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';

/**
 * Webhooks as the Standard Webhooks specification has them (https://www.standardwebhooks.com):
 * a secret `whsec_<base64 key>`, and three headers on every delivery, `webhook-id` (the same on
 * every attempt: receivers dedupe on it), `webhook-timestamp` (seconds, per attempt: receivers
 * refuse old ones, so a captured request cannot be replayed) and `webhook-signature`,
 * `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, space-separated when two secrets
 * are in force (during a rotation's grace period).
 */
export const WEBHOOK_EVENT_TYPES = [
  'cap.threshold_reached',
  'commitment.threshold_reached',
  'cap.paused',
  'cap.lifted',
  'spend.velocity_spike',
  'session.projection_exceeded',
  'invoice.closed',
  'credits.exhausted',
  'webhook.test',
] as const;

export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

const SECRET_PREFIX = 'whsec_';
/** 24 random bytes: within the 24 to 64 bytes the specification asks of a key. */
const SECRET_BYTES = 24;

export function newWebhookSecret(): string {
  return SECRET_PREFIX + randomBytes(SECRET_BYTES).toString('base64');
}

function secretKey(secret: string): Buffer {
  if (!secret.startsWith(SECRET_PREFIX)) throw new Error('a webhook secret starts with whsec_');
  return Buffer.from(secret.slice(SECRET_PREFIX.length), 'base64');
}

/** The `webhook-signature` header of one attempt: one `v1,<signature>` per secret in force. */
function webhookSignature(secrets: string[], messageId: string, timestampSeconds: number, body: string): string {
  return secrets
    .map((secret) => `v1,${createHmac('sha256', secretKey(secret)).update(`${messageId}.${timestampSeconds}.${body}`).digest('base64')}`)
    .join(' ');
}

export function webhookHeaders(secrets: string[], messageId: string, timestampSeconds: number, body: string): Record<string, string> {
  return {
    'content-type': 'application/json',
    'webhook-id': messageId,
    'webhook-timestamp': String(timestampSeconds),
    'webhook-signature': webhookSignature(secrets, messageId, timestampSeconds, body),
  };
}

/** The body of a delivery: the event's type, when it happened, and its data. */
export function webhookPayload(type: WebhookEventType, at: Date, data: Record<string, unknown>): string {
  return JSON.stringify({ type, timestamp: at.toISOString(), data });
}

/** Loopback, private (RFC 1918, unique local), link-local, CGNAT, unspecified, multicast and reserved addresses. */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) {
    const [a, b] = address.split('.').map(Number);
    return (
      a === 0 ||
      a === 10 ||
      a === 127 ||
      (a === 100 && b >= 64 && b <= 127) ||
      (a === 169 && b === 254) ||
      (a === 172 && b >= 16 && b <= 31) ||
      (a === 192 && b === 168) ||
      (a === 198 && (b === 18 || b === 19)) ||
      a >= 224
    );
  }
  if (family === 6) {
    const lower = address.toLowerCase();
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
    if (mapped) return isPrivateAddress(mapped[1]);
    return lower === '::' || lower === '::1' || /^f[cd]/.test(lower) || /^fe[89ab]/.test(lower) || lower.startsWith('ff');
  }
  return false;
}

/** Why a URL cannot be a webhook endpoint, or undefined when it can. */
export function webhookUrlProblem(text: string, options: { allowPrivateNetworks: boolean }): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return 'not a URL';
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return `scheme ${url.protocol.replace(/:$/, '')} is not http or https`;
  if (url.username || url.password) return 'credentials in the URL are not allowed';
  if (!options.allowPrivateNetworks) {
    const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
    if (host === 'localhost' || host.endsWith('.localhost') || isPrivateAddress(host)) {
      return `${host} is a private-network address, and this deployment forbids them (WEBHOOK_ALLOW_PRIVATE_NETWORKS)`;
    }
  }
  return undefined;
}

/**
 * Exponential backoff: `baseMs` after the first failed attempt, doubling each time up to `maxMs`,
 * plus up to 10 % jitter so that endpoints that failed together are not retried in lockstep.
 */
export function retryDelayMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const exponential = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(attempt - 1, 0), 40));
  return Math.round(exponential * (1 + 0.1 * random()));
}
