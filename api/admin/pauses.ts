import { z } from 'zod';
import { formatNano } from '../../domain/money.js';
import { pauseLift, pauseLifted, pauseList } from '../../schemas/admin.js';
import { liftPause, pauseHistory } from '../../store/pause-flags.js';
import { notFound } from '../errors.js';
import { endpoint, type Endpoint } from './endpoint.js';

/** The pauses spend caps set, and lifting one by hand. */
export function pauseEndpoints(): Endpoint[] {
  return [
    endpoint({
      method: 'get',
      path: '/pauses',
      tag: 'Spend caps',
      summary: 'List pauses set by spend caps',
      description:
        'Newest first (at most `limit`). `status=in_force` (the default): not lifted yet; `lifted`: lifted, with who or what lifted them (admin, with the id of the admin token; cap_raised, cap_disabled, period_rollover) and why; `all`.',
      query: z.strictObject({
        status: z.enum(['in_force', 'lifted', 'all']).optional(),
        limit: z.coerce.number().int().min(1).max(500).optional(),
      }),
      response: pauseList,
      async handle({ tenantId, query, deps }) {
        const rows = await pauseHistory(deps.sql, tenantId, query.status ?? 'in_force', query.limit ?? 100);
        return {
          data: rows.map((r) => ({
            cap_id: r.capId,
            scope_kind: r.scopeKind,
            scope_id: r.scopeId,
            period_key: r.periodKey,
            limit: formatNano(r.limitNano),
            event_id: r.eventId,
            paused_at: r.pausedAt.toISOString(),
            period_ends_at: r.periodEndsAt?.toISOString() ?? null,
            lifted_at: r.liftedAt?.toISOString() ?? null,
            lifted_by: r.liftedBy,
            lifted_by_token_id: r.liftedByTokenId,
            lift_reason: r.liftReason,
          })),
        };
      },
    }),
    endpoint({
      method: 'post',
      path: '/pauses/lift',
      tag: 'Spend caps',
      summary: 'Lift a pause',
      description:
        'Deletes the pause flag of the scope (authorize allows it at once) and records every pause of that scope as lifted by admin, with the reason and the id of the admin token making the call (also in the `cap.lifted` webhook). The running total stays over the cap, so the scope is not paused again this period and estimates are no longer refused against that cap; the next period counts afresh.',
      body: pauseLift,
      response: pauseLifted,
      async handle({ tenantId, tokenId, body, deps }) {
        const lifted = await liftPause(
          deps.sql,
          deps.redis,
          { prefix: deps.prefix, partitions: deps.partitions ?? 1 },
          tenantId,
          { capId: body.cap_id, scopeId: body.scope_id, periodKey: body.period_key },
          { by: 'admin', tokenId, ...(body.reason ? { reason: body.reason } : {}) },
        );
        if (!lifted) throw notFound('pause in force', `${body.cap_id}/${body.scope_id}/${body.period_key}`);
        return {
          scope_kind: lifted.scopeKind,
          scope_id: lifted.scopeId,
          flag_deleted: lifted.flagDeleted,
          records_lifted: lifted.recordsLifted,
          lifted_at: lifted.liftedAt.toISOString(),
          lifted_by_token_id: tokenId,
        };
      },
    }),
  ];
}
