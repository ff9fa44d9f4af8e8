import type { Logger } from '../../pipeline/logger.js';
import type { Sql } from '../../pipeline/postgres.js';
import { pruneApplied, pruneAppliedBlocks } from '../../store/applied.js';

export interface SweepPolicy {
  /** An ACTIVE session with no event for this long becomes IDLE. */
  idleSeconds: number;
  /** An open session (ACTIVE, IDLE, PAUSED) with no event for this long becomes EXPIRED. */
  expireSeconds: number;
  /** session_applied_events rows, and session-update's applied_blocks rows, older than this are deleted. */
  appliedRetentionSeconds: number;
  /** Rows changed per statement, so one sweep never holds many locks for long. */
  chunk: number;
}

export const DEFAULT_APPLIED_RETENTION_SECONDS = 24 * 3600;

/** The stage name session-update claims its blocks under in applied_blocks (its StageDefinition name). */
const SESSION_UPDATE_STAGE = 'session-update';

export interface SweepResult {
  expired: number;
  idled: number;
  pruned: number;
}

/**
 * The session timer, measured in event time: a session's idleness is `now - last_event_at`
 * (the newest recorded_timestamp of its events). Expiry runs first, so a session silent for
 * longer than the expiry goes straight to EXPIRED (ended_at = its last event).
 *
 * Safe with any number of processes sweeping at once, and beside the stage's own writes: each
 * statement locks its rows with FOR UPDATE SKIP LOCKED (a row another sweeper or a batch holds
 * is left for the next round), and re-checks its condition on the row as locked, so a session
 * that received an event meanwhile is not touched. Every change is idempotent.
 */
export async function sweepSessions(sql: Sql, now: number, policy: SweepPolicy, maxRounds = 20): Promise<SweepResult> {
  const result: SweepResult = { expired: 0, idled: 0, pruned: 0 };
  const expireBefore = new Date(now - policy.expireSeconds * 1000);
  const idleBefore = new Date(now - policy.idleSeconds * 1000);
  const pruneBefore = new Date(now - policy.appliedRetentionSeconds * 1000);

  for (let round = 0; round < maxRounds; round++) {
    const expired = await sql`
      WITH due AS (
        SELECT tenant_id, session_id FROM mcp_sessions
        WHERE status IN ('ACTIVE', 'IDLE', 'PAUSED') AND last_event_at <= ${expireBefore}
        ORDER BY last_event_at
        LIMIT ${policy.chunk}
        FOR UPDATE SKIP LOCKED)
      UPDATE mcp_sessions s SET status = 'EXPIRED', ended_at = s.last_event_at, updated_at = now()
      FROM due WHERE s.tenant_id = due.tenant_id AND s.session_id = due.session_id`;
    result.expired += expired.count;
    if (expired.count < policy.chunk) break;
  }
  for (let round = 0; round < maxRounds; round++) {
    const idled = await sql`
      WITH due AS (
        SELECT tenant_id, session_id FROM mcp_sessions
        WHERE status = 'ACTIVE' AND last_event_at <= ${idleBefore}
        ORDER BY last_event_at
        LIMIT ${policy.chunk}
        FOR UPDATE SKIP LOCKED)
      UPDATE mcp_sessions s SET status = 'IDLE', updated_at = now()
      FROM due WHERE s.tenant_id = due.tenant_id AND s.session_id = due.session_id`;
    result.idled += idled.count;
    if (idled.count < policy.chunk) break;
  }
  result.pruned = await pruneApplied(sql, 'session_applied_events', pruneBefore, policy.chunk, maxRounds);
  // Only session-update's blocks: the other stages' rows are theirs to prune (one may be down for
  // longer than this retention, and find its blocks again when it comes back).
  result.pruned += await pruneAppliedBlocks(sql, SESSION_UPDATE_STAGE, pruneBefore, policy.chunk, maxRounds);
  return result;
}

/** Runs sweepSessions every intervalMs inside the stage process; never two at once in one process. */
export class SessionSweeper {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;

  constructor(
    private readonly sql: Sql,
    private readonly policy: SweepPolicy,
    private readonly intervalMs: number,
    private readonly log: Logger,
    private readonly clock: () => number = Date.now,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.sweepOnce(), this.intervalMs);
    this.timer.unref();
  }

  /** One sweep now (or the one already running); errors are logged, the next tick tries again. */
  sweepOnce(): Promise<void> {
    this.running ??= (async () => {
      try {
        const result = await sweepSessions(this.sql, this.clock(), this.policy);
        if (result.expired || result.idled || result.pruned) this.log.info(result, 'session sweep');
      } catch (err) {
        this.log.warn({ err }, 'session sweep failed; retrying at the next tick');
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }
}
