// The webhook delivery worker: `node dist/ops/webhook-worker.js` (npm start runs one, supervised).
// Any number may run: each claims due deliveries with FOR UPDATE SKIP LOCKED.
import type { LookupAddress } from 'node:dns';
import { lookup } from 'node:dns/promises';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import { fileURLToPath } from 'node:url';
import { isPrivateAddress, retryDelayMs, webhookHeaders } from '../domain/webhooks.js';
import { loadConfigOrExit, type Config } from '../pipeline/config.js';
import { describeError, settleWithin, surviveDependencyRejections } from '../pipeline/errors.js';
import { createLogger, type Logger } from '../pipeline/logger.js';
import { connectPostgres, type Sql } from '../pipeline/postgres.js';
import { claimDueDeliveries, pruneWebhookHistory, recordAttempt, unsealSecret, type AttemptOutcome, type ClaimedDelivery, type RetryPolicy } from '../store/webhooks.js';

type WorkerConfig = Pick<
  Config,
  | 'WEBHOOK_ALLOW_PRIVATE_NETWORKS'
  | 'WEBHOOK_SECRET_KEY'
  | 'WEBHOOK_TIMEOUT_MS'
  | 'WEBHOOK_RETRY_BASE_MS'
  | 'WEBHOOK_RETRY_MAX_DELAY_MS'
  | 'WEBHOOK_RETRY_WINDOW_SECONDS'
  | 'WEBHOOK_DISABLE_AFTER_SECONDS'
  | 'WEBHOOK_POLL_INTERVAL_MS'
  | 'WEBHOOK_CONCURRENCY'
  | 'WEBHOOK_RETENTION_DAYS'
  | 'WEBHOOK_ENDPOINT_CONCURRENCY'
>;

const PRUNE_INTERVAL_MS = 3_600_000;

export interface WebhookWorker {
  /** Finishes the attempts in hand (recording them), then resolves. */
  stop(): Promise<void>;
}

/**
 * How long a claim lasts: twice the request timeout and 5 s more, so it never runs out while its
 * attempt (aborted at the timeout) is still being recorded; after a crash the delivery is due again then.
 */
const leaseMs = (config: WorkerConfig) => 2 * config.WEBHOOK_TIMEOUT_MS + 5_000;

/**
 * The addresses a host resolves to, resolved once for this attempt, or why it cannot be posted to:
 * one of them is a private-network address and the deployment forbids them (checked per attempt:
 * DNS can change).
 */
async function checkedAddresses(host: string, timeoutMs: number): Promise<{ addresses: LookupAddress[] } | { problem: string }> {
  // The attempt's timeout covers the name's resolution too: a resolver that never answers would hold the delivery's lease.
  const unresolved = `${host} did not resolve within ${timeoutMs} ms`;
  const addresses = await settleWithin(lookup(host, { all: true }), timeoutMs, () => new Error(unresolved)).catch((err: unknown) => {
    if (err instanceof Error && err.message === unresolved) return undefined;
    throw err;
  });
  if (!addresses) return { problem: unresolved };
  const blocked = addresses.find((a) => isPrivateAddress(a.address));
  if (blocked) return { problem: `${host} resolves to ${blocked.address}, a private-network address, which this deployment forbids` };
  return { addresses };
}

/**
 * A `lookup` for the connection that answers with the addresses checked above and nothing else:
 * the socket goes to an address that was checked, never to what a second resolution of the name
 * returns (DNS rebinding). The name itself still goes in the Host header and, for https, in SNI
 * and the certificate check.
 */
function pinnedLookup(checked: LookupAddress[]): LookupFunction {
  return (hostname, options, callback) => {
    const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : options.family;
    const candidates = family === 4 || family === 6 ? checked.filter((a) => a.family === family) : checked;
    if (candidates.length === 0) {
      callback(Object.assign(new Error(`${hostname} has no IPv${family} address among those checked`), { code: 'ENOTFOUND' }), '');
    } else if (options.all) {
      callback(null, candidates);
    } else {
      callback(null, candidates[0].address, candidates[0].family);
    }
  };
}

/**
 * POSTs the body and resolves with the response's status as soon as it arrives; the response body
 * is not read (the connection is closed). A redirect is a status like any other: never followed.
 */
function post(url: URL, headers: Record<string, string>, body: string, options: { lookup?: LookupFunction; signal: AbortSignal }): Promise<number> {
  const requestOptions: RequestOptions = {
    method: 'POST',
    hostname: url.hostname.replace(/^\[|\]$/g, ''),
    port: url.port || undefined,
    path: `${url.pathname}${url.search}`,
    headers: { ...headers, host: url.host, 'content-length': String(Buffer.byteLength(body)) },
    // A connection of its own per attempt: none kept alive, so none made by another lookup is reused.
    agent: false,
    signal: options.signal,
    ...(options.lookup ? { lookup: options.lookup } : {}),
  };
  return new Promise<number>((resolve, reject) => {
    const onResponse = (response: IncomingMessage) => {
      resolve(response.statusCode ?? 0);
      response.destroy();
    };
    const request = url.protocol === 'https:' ? httpsRequest(requestOptions, onResponse) : httpRequest(requestOptions, onResponse);
    request.on('error', reject);
    request.end(body);
  });
}

/** One attempt: POST the payload, signed for this attempt; 2xx is a success, anything else (a redirect included) a failure. */
export async function attemptDelivery(delivery: ClaimedDelivery, config: WorkerConfig, now = () => new Date()): Promise<AttemptOutcome> {
  const startedAt = now();
  const finish = (fields: Omit<AttemptOutcome, 'startedAt' | 'durationMs'>): AttemptOutcome => ({
    startedAt,
    durationMs: Date.now() - startedAt.getTime(),
    ...fields,
  });
  try {
    const url = new URL(delivery.url);
    let pinned: LookupFunction | undefined;
    if (!config.WEBHOOK_ALLOW_PRIVATE_NETWORKS) {
      const checked = await checkedAddresses(url.hostname.replace(/^\[|\]$/g, ''), config.WEBHOOK_TIMEOUT_MS);
      if ('problem' in checked) return finish({ succeeded: false, error: checked.problem });
      pinned = pinnedLookup(checked.addresses);
    }
    const secrets = delivery.secretsSealed.map((sealed) => unsealSecret(sealed, config.WEBHOOK_SECRET_KEY));
    const timestamp = Math.floor(startedAt.getTime() / 1000);
    const status = await post(
      url,
      { ...webhookHeaders(secrets, delivery.messageId, timestamp, delivery.payload), 'user-agent': 'agentmeter-webhooks/1' },
      delivery.payload,
      { lookup: pinned, signal: AbortSignal.timeout(config.WEBHOOK_TIMEOUT_MS) },
    );
    const succeeded = status >= 200 && status < 300;
    return finish({ succeeded, responseStatus: status, ...(succeeded ? {} : { error: `HTTP ${status}` }) });
  } catch (err) {
    const timedOut = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
    return finish({ succeeded: false, error: timedOut ? `no answer within ${config.WEBHOOK_TIMEOUT_MS} ms` : describeError(err) });
  }
}

export function retryPolicy(config: WorkerConfig): RetryPolicy {
  return {
    delayMs: (attempt) => retryDelayMs(attempt, config.WEBHOOK_RETRY_BASE_MS, config.WEBHOOK_RETRY_MAX_DELAY_MS),
    windowSeconds: config.WEBHOOK_RETRY_WINDOW_SECONDS,
    disableAfterSeconds: config.WEBHOOK_DISABLE_AFTER_SECONDS,
  };
}

/** Claims, posts and records deliveries until stopped; sleeps WEBHOOK_POLL_INTERVAL_MS when none is due. */
export function startWebhookWorker(sql: Sql, config: WorkerConfig, log: Logger): WebhookWorker {
  const policy = retryPolicy(config);
  let stopping = false;
  let wake: (() => void) | undefined;
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  const deliverOne = async (delivery: ClaimedDelivery) => {
    const outcome = await attemptDelivery(delivery, config);
    const result = await recordAttempt(sql, delivery, outcome, policy);
    const fields = { delivery: delivery.id, endpoint: delivery.endpointId, attempt: delivery.attempt, status: outcome.responseStatus, result };
    if (outcome.succeeded) log.debug(fields, 'webhook delivered');
    else log.info({ ...fields, error: outcome.error }, 'webhook attempt failed');
  };

  let prunedAt = 0;
  // A pool, not rounds: a free slot takes the next due delivery at once, so one endpoint that
  // hangs until the timeout never holds back the deliveries of the others.
  const inFlight = new Set<Promise<void>>();
  const busy = new Map<string, number>();
  const hold = (endpointId: string, by: number) => {
    const n = (busy.get(endpointId) ?? 0) + by;
    if (n > 0) busy.set(endpointId, n);
    else busy.delete(endpointId);
  };
  const loop = (async () => {
    while (!stopping) {
      try {
        if (Date.now() - prunedAt > PRUNE_INTERVAL_MS) {
          prunedAt = Date.now();
          const pruned = await pruneWebhookHistory(sql, new Date(Date.now() - config.WEBHOOK_RETENTION_DAYS * 86_400_000));
          if (pruned) log.info({ pruned }, 'webhook history pruned');
        }
        const free = config.WEBHOOK_CONCURRENCY - inFlight.size;
        const claimed = free > 0 ? await claimDueDeliveries(sql, free, leaseMs(config), { perEndpoint: config.WEBHOOK_ENDPOINT_CONCURRENCY, busy }) : [];
        for (const delivery of claimed) {
          hold(delivery.endpointId, 1);
          const running: Promise<void> = deliverOne(delivery)
            .catch((err) => log.warn({ err: describeError(err), delivery: delivery.id }, 'webhook attempt not recorded; its claim runs out and it is tried again'))
            .finally(() => {
              inFlight.delete(running);
              hold(delivery.endpointId, -1);
            });
          inFlight.add(running);
        }
        if (claimed.length === free && free > 0) continue;
        // Wait for a slot to free up, or for the next poll when nothing more was due.
        await Promise.race([...inFlight, claimed.length < free ? sleep(config.WEBHOOK_POLL_INTERVAL_MS) : new Promise<void>(() => {})]);
      } catch (err) {
        log.warn({ err: describeError(err) }, 'webhook worker: a store failed; retrying');
        await sleep(Math.max(config.WEBHOOK_POLL_INTERVAL_MS, 1_000));
      }
    }
    await Promise.all(inFlight);
  })();

  return {
    async stop() {
      stopping = true;
      wake?.();
      await loop;
    },
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const config = loadConfigOrExit();
  const log = createLogger(`webhooks-${config.WORKER_SLOT}`, config.LOG_LEVEL);
  surviveDependencyRejections(log);
  const sql = connectPostgres(config.DATABASE_URL, { max: 4, name: 'webhooks' });
  const worker = startWebhookWorker(sql, config, log);
  log.info({ concurrency: config.WEBHOOK_CONCURRENCY }, 'webhook worker started');
  const shutdown = async () => {
    await worker.stop();
    await sql.end({ timeout: 5 });
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown());
  process.on('SIGINT', () => void shutdown());
}
