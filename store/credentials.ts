import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Secrets (API keys, client secrets, tenant tokens) are made with a CSPRNG, shown once,
 * and stored only as SHA-256 digests with a visible prefix and last four characters.
 * They are 190+ bits of randomness, so a fast digest is enough; no password hashing needed.
 */
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

export function randomToken(length: number): string {
  // Rejection sampling keeps every character uniform (256 is not a multiple of 62).
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out += ALPHABET[byte % 62];
    }
  }
  return out;
}

export function newId(prefix: string): string {
  return `${prefix}_${randomToken(20)}`;
}

export function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** The form in which an API key travels the pipeline and sits in the database: hex SHA-256. */
export function hashApiKey(rawKey: string): string {
  return sha256(rawKey).toString('hex');
}

export function sameDigest(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export interface IssuedSecret {
  /** The raw secret: returned to the caller once, never stored. */
  secret: string;
  prefix: string;
  last4: string;
}

/** An API key for an agent or app: sk_live_<32 chars>. Stored as hashApiKey(secret). */
export function issueApiKey(): IssuedSecret & { keyHash: string } {
  const secret = `sk_live_${randomToken(32)}`;
  return { secret, prefix: secret.slice(0, 12), last4: secret.slice(-4), keyHash: hashApiKey(secret) };
}

/** A client secret: cs_<40 chars>. Stored as sha256(secret). */
export function issueClientSecret(): IssuedSecret & { secretHash: Buffer } {
  const secret = `cs_${randomToken(40)}`;
  return { secret, prefix: secret.slice(0, 7), last4: secret.slice(-4), secretHash: sha256(secret) };
}

export function newClientId(): string {
  return `cli_${randomToken(24)}`;
}

/** A tenant bearer token: amt_<lookup id>_<secret>. The lookup id finds the row; the digest is compared in constant time. */
export function issueTenantToken(): IssuedSecret & { lookupId: string; tokenHash: Buffer } {
  const lookupId = randomToken(12);
  const secret = `amt_${lookupId}_${randomToken(32)}`;
  return { secret, lookupId, prefix: secret.slice(0, 16), last4: secret.slice(-4), tokenHash: sha256(secret) };
}

export function parseTenantToken(token: string): { lookupId: string } | undefined {
  const match = /^amt_([A-Za-z0-9]{12})_[A-Za-z0-9]{32}$/.exec(token);
  return match ? { lookupId: match[1] } : undefined;
}
