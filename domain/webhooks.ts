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

function isPrivateIPv4(address: string): boolean {
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

/** The eight 16-bit groups of a valid IPv6 address (`::` expanded, a dotted IPv4 tail and a zone id read). */
function ipv6Groups(address: string): number[] {
  let text = address.toLowerCase().replace(/%.*$/, '');
  const tail: number[] = [];
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number);
    tail.push((a << 8) | b, (c << 8) | d);
    text = text.slice(0, dotted.index);
    if (text.endsWith(':') && !text.endsWith('::')) text = text.slice(0, -1);
  }
  const hex = (part: string) => (part === '' ? [] : part.split(':').map((g) => Number.parseInt(g, 16)));
  const gap = text.indexOf('::');
  if (gap === -1) return [...hex(text), ...tail];
  const head = hex(text.slice(0, gap));
  const rest = [...hex(text.slice(gap + 2)), ...tail];
  return [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest];
}

/**
 * The IPv4 address an IPv6 address stands for, where it embeds one a packet can reach: IPv4-mapped
 * (::ffff:0:0/96), IPv4-translated (::ffff:0:0:0/96), IPv4-compatible (::/96, :: and ::1 included),
 * NAT64 (64:ff9b::/96), 6to4 (2002::/16) and Teredo (2001::/32, the client's address inverted).
 */
function embeddedIPv4(g: number[]): string | undefined {
  const v4 = (hi: number, lo: number) => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  const zero = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  if (zero(0, 5) && (g[5] === 0 || g[5] === 0xffff)) return v4(g[6], g[7]);
  if (zero(0, 4) && g[4] === 0xffff && g[5] === 0) return v4(g[6], g[7]);
  if (g[0] === 0x64 && g[1] === 0xff9b && zero(2, 6)) return v4(g[6], g[7]);
  if (g[0] === 0x2002) return v4(g[1], g[2]);
  if (g[0] === 0x2001 && g[1] === 0) return v4(g[6] ^ 0xffff, g[7] ^ 0xffff);
  return undefined;
}

/**
 * Loopback, private (RFC 1918, unique local), link-local, CGNAT, unspecified, multicast and reserved
 * addresses; an IPv6 address that embeds an IPv4 one (mapped, compatible, NAT64, 6to4, Teredo) is
 * judged by that IPv4 address, whatever way it is written (`::ffff:7f00:1` is 127.0.0.1).
 */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address.replace(/%.*$/, ''));
  if (family === 4) return isPrivateIPv4(address);
  if (family !== 6) return false;
  const g = ipv6Groups(address);
  const v4 = embeddedIPv4(g);
  if (v4 !== undefined) return isPrivateIPv4(v4);
  return (
    (g[0] & 0xfe00) === 0xfc00 || // fc00::/7 unique local
    (g[0] & 0xffc0) === 0xfe80 || // fe80::/10 link-local
    (g[0] & 0xffc0) === 0xfec0 || // fec0::/10 site-local (deprecated)
    (g[0] & 0xff00) === 0xff00 || // ff00::/8 multicast
    (g[0] === 0x64 && g[1] === 0xff9b && g[2] === 1) || // 64:ff9b:1::/48 NAT64 for local use
    (g[0] === 0x100 && g[1] === 0 && g[2] === 0 && g[3] === 0) || // 100::/64 discard
    (g[0] === 0x2001 && g[1] === 0xdb8) // 2001:db8::/32 documentation
  );
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
    // A trailing dot names the same host (`localhost.` is localhost): the rules below read the name without it.
    const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase().replace(/\.+$/, '');
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
