import { z } from 'zod';
import { formatScaled, parseScaled } from '../money.js';
import { exactnessProblems, readPlanNumbers } from './plan-numbers.js';
import {
  DEFAULT_TOOL_KEY,
  SECONDS_DECIMALS,
  ratePlanObjectSchema,
  subscriptionTermsSchema,
  type RatePlanPricing,
  type SubscriptionTerms,
} from './plan-schema.js';
import type { ValidationProblem, Validated } from '../validation.js';

/** The plan schema with its cross-field checks (bucket and tier order, aliases, mode conflicts, exactness). */
export const ratePlanPricingSchema = ratePlanObjectSchema
  .superRefine((plan, ctx) => {
    for (const problem of crossFieldProblems(plan)) ctx.addIssue({ code: 'custom', path: problem.path, message: problem.message });
  })
  .meta({ description: "A rate plan's dimension pricing." });

export function validateSubscriptionTerms(input: unknown): Validated<'terms', SubscriptionTerms> {
  const parsed = subscriptionTermsSchema.safeParse(input);
  if (parsed.success) return { ok: true, terms: parsed.data };
  return { ok: false, errors: describeIssuesAsJsonPath(parsed.error) };
}

type PathSegment = string | number;
interface CrossFieldProblem {
  path: PathSegment[];
  message: string;
}

/** Checks that need more than one field: order of buckets and tiers, aliases, mode conflicts, exactness. */
function crossFieldProblems(plan: RatePlanPricing): CrossFieldProblem[] {
  const problems: CrossFieldProblem[] = [];
  const add = (path: PathSegment[], message: string) => problems.push({ path, message });
  const tools = plan.tool_invocations;

  if (tools && !Object.hasOwn(tools, DEFAULT_TOOL_KEY)) {
    add(['tool_invocations'], 'needs a "*" default so that tools not listed are priced (use "*": 0 to make them free)');
  }
  checkAliases(plan, add);
  checkServerTools(plan, add);
  checkDurationBuckets(plan.duration_buckets, add);
  checkVolumeTierOrder(plan.volume_tiers, add);
  checkVolumeTiers(plan, add);
  checkCommitment(plan, add);
  if (plan.tool_multipliers && !plan.token_multipliers) {
    add(['tool_multipliers'], 'tool multipliers scale token cost, but token_multipliers sets no token rate');
  }
  problems.push(...exactnessProblems(readPlanNumbers(plan)));
  return problems;
}

type AddProblem = (path: PathSegment[], message: string) => void;

function checkAliases(plan: RatePlanPricing, add: AddProblem): void {
  const aliases = plan.tool_aliases;
  if (!aliases) return;
  for (const [alias, target] of Object.entries(aliases)) {
    const path = ['tool_aliases', alias];
    if (alias === DEFAULT_TOOL_KEY || target === DEFAULT_TOOL_KEY) {
      add(path, '"*" is the default price, not a tool: it can be neither an alias nor its target');
    } else if (alias === target) {
      add(path, 'a tool cannot be an alias of itself');
    } else if (plan.tool_invocations && Object.hasOwn(plan.tool_invocations, alias)) {
      add(path, `"${alias}" is both an alias and priced in tool_invocations: a renamed tool keeps the price of "${target}"; remove one of the two`);
    } else if (plan.tool_multipliers && Object.hasOwn(plan.tool_multipliers, alias)) {
      add(path, `"${alias}" is both an alias and listed in tool_multipliers: it takes the multiplier of "${target}"; remove one of the two`);
    } else if (Object.hasOwn(aliases, target)) {
      add(path, `"${target}" is itself an alias (of "${aliases[target]}"): point "${alias}" at the final name`);
    }
  }
}

/** A server's price table names tools as rating finds them: after the plan's aliases, so an alias there would never be read. */
function checkServerTools(plan: RatePlanPricing, add: AddProblem): void {
  for (const [server, prices] of Object.entries(plan.mcp_servers ?? {})) {
    for (const tool of Object.keys(prices.tool_invocations)) {
      const target = plan.tool_aliases && Object.hasOwn(plan.tool_aliases, tool) ? plan.tool_aliases[tool] : undefined;
      if (target !== undefined) {
        add(['mcp_servers', server, 'tool_invocations', tool], `"${tool}" is an alias of "${target}" (tool_aliases): calls are priced as "${target}", so list "${target}" here instead`);
      }
    }
  }
}

interface BucketBound {
  max_seconds?: unknown;
}
interface TierStart {
  min_invocations?: unknown;
  rate?: unknown;
  discount_percent?: unknown;
}

/**
 * Order checks read each bound leniently (a bucket with a bad rate still has its bound checked),
 * so that they also run on input that failed elsewhere: every problem is reported at once.
 */
function checkDurationBuckets(buckets: readonly BucketBound[] | undefined, add: AddProblem): void {
  if (!buckets) return;
  if (buckets.length === 0) {
    add(['duration_buckets'], 'needs at least one bucket (or leave duration_buckets out)');
    return;
  }
  let highest: bigint | undefined;
  buckets.forEach((bucket, index) => {
    const path = ['duration_buckets', index, 'max_seconds'];
    const isLast = index === buckets.length - 1;
    if (bucket?.max_seconds == null) {
      if (!isLast) add(path, 'only the last bucket may be open-ended (max_seconds null)');
      return;
    }
    const limit = readScaled(bucket.max_seconds, SECONDS_DECIMALS);
    if (limit === undefined) return;
    const shown = formatScaled(limit, SECONDS_DECIMALS);
    if (highest !== undefined && limit === highest) {
      add(path, `overlaps bucket ${index - 1}: both end at ${shown} s; max_seconds must be strictly ascending`);
    } else if (highest !== undefined && limit < highest) {
      add(path, `buckets must be sorted by max_seconds ascending: ${shown} s follows ${formatScaled(highest, SECONDS_DECIMALS)} s`);
    }
    if (highest === undefined || limit > highest) highest = limit;
  });
}

/**
 * What a valid plan does that its author may not expect. A bounded last duration bucket (the
 * article's own `{"max_seconds": 3600, ...}`) is accepted: a longer call is priced at that last
 * bucket, and the warning says so.
 */
function planWarnings(plan: RatePlanPricing): CrossFieldProblem[] {
  const warnings: CrossFieldProblem[] = [];
  const buckets = plan.duration_buckets ?? [];
  const last = buckets.at(-1);
  if (last && last.max_seconds != null) {
    const index = buckets.length - 1;
    warnings.push({
      path: ['duration_buckets', index, 'max_seconds'],
      message: `the last bucket is bounded: calls longer than ${last.max_seconds} s are priced at this bucket's rate (${last.rate}); write "max_seconds": null to make that explicit`,
    });
  }
  return warnings;
}

function checkVolumeTierOrder(tiers: readonly TierStart[] | undefined, add: AddProblem): void {
  if (!tiers) return;
  if (tiers.length === 0) {
    add(['volume_tiers'], 'needs at least one tier (or leave volume_tiers out)');
    return;
  }
  const starts = tiers.map((tier) => (Number.isSafeInteger(tier?.min_invocations) ? (tier.min_invocations as number) : undefined));
  if (starts[0] !== undefined && starts[0] !== 0) {
    add(['volume_tiers', 0, 'min_invocations'], 'the first tier must start at 0, or the first calls of the month would be unpriced');
  }
  let highest: number | undefined;
  starts.forEach((here, index) => {
    if (here === undefined) return;
    const path = ['volume_tiers', index, 'min_invocations'];
    if (highest !== undefined && here === highest) add(path, `overlaps tier ${index - 1}: both start at ${here}; min_invocations must be strictly ascending`);
    else if (highest !== undefined && here < highest) add(path, `tiers must be sorted by min_invocations ascending: ${here} follows ${highest}`);
    if (highest === undefined || here > highest) highest = here;
  });
  const kinds = tiers.map((tier) => (tier?.rate !== undefined ? 'rate' : tier?.discount_percent !== undefined ? 'discount' : undefined));
  const first = kinds.find((kind) => kind !== undefined);
  const mixedAt = kinds.findIndex((kind) => kind !== undefined && kind !== first);
  if (mixedAt > 0) {
    add(['volume_tiers', mixedAt], 'all tiers must be of one kind: either every tier has a rate or every tier has a discount_percent');
  }
}

function checkVolumeTiers(plan: RatePlanPricing, add: AddProblem): void {
  const tiers = plan.volume_tiers;
  if (!tiers) {
    if (plan.volume_tier_mode) add(['volume_tier_mode'], 'is set but there are no volume_tiers');
    return;
  }
  if (tiers.length > 0 && tiers.every((tier) => tier.rate !== undefined) && plan.tool_invocations) {
    add(['volume_tiers'], 'tiers with a rate set the price of every call, so tool_invocations cannot also be set; use discount_percent tiers to discount per-tool prices');
  }
  if (tiers.length > 0 && tiers.every((tier) => tier.rate !== undefined) && plan.mcp_servers) {
    add(['mcp_servers'], 'tiers with a rate set the price of every call, so per-server tool prices cannot also be set; use discount_percent tiers');
  }
}

function readScaled(value: unknown, decimals: number): bigint | undefined {
  if (typeof value !== 'number' && typeof value !== 'string') return undefined;
  try {
    return parseScaled(value, decimals);
  } catch {
    return undefined;
  }
}

/** The checks that can run on input that failed to parse. */
function orderProblems(input: unknown): CrossFieldProblem[] {
  const problems: CrossFieldProblem[] = [];
  if (typeof input !== 'object' || input === null) return problems;
  const raw = input as { duration_buckets?: unknown; volume_tiers?: unknown };
  const add = (path: PathSegment[], message: string) => problems.push({ path, message });
  if (Array.isArray(raw.duration_buckets)) checkDurationBuckets(raw.duration_buckets as BucketBound[], add);
  if (Array.isArray(raw.volume_tiers)) checkVolumeTierOrder(raw.volume_tiers as TierStart[], add);
  return problems;
}

function checkCommitment(plan: RatePlanPricing, add: AddProblem): void {
  const committed = plan.billing_mode === 'COMMITTED';
  if (committed && !plan.commitment) {
    add(['commitment'], 'billing_mode COMMITTED needs a commitment: { committed_amount, committed_price }');
  }
  if (!committed && plan.commitment) {
    add(['billing_mode'], 'a commitment is set: billing_mode must be "COMMITTED"');
  }
  if (!committed) return;
  const toolKeys = Object.keys(plan.tool_invocations ?? {});
  if (toolKeys.some((key) => key !== DEFAULT_TOOL_KEY)) {
    add(
      ['tool_invocations'],
      'a COMMITTED plan prices calls beyond the commitment at one overage rate, given as tool_invocations["*"]; per-tool rates would leave open which calls the commitment covers',
    );
  }
  if (plan.mcp_servers) {
    add(['mcp_servers'], 'a COMMITTED plan prices calls beyond the commitment at one overage rate, tool_invocations["*"]; per-server prices would leave open which calls the commitment covers');
  }
  if (plan.volume_tiers) {
    add(['volume_tiers'], 'a COMMITTED plan is already a volume deal: its commitment covers calls at the overage rate, which volume tiers would change under it; leave volume_tiers out');
  }
}

/** `$.duration_buckets[2].max_seconds`, `$.tool_invocations['*']`. */
export function jsonPath(path: readonly PropertyKey[]): string {
  let out = '$';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else if (typeof segment === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(segment)) out += `.${segment}`;
    else out += `['${String(segment).replace(/\\/g, '\\\\').replace(/'/g, "\\'")}']`;
  }
  return out;
}

/** One problem per issue; an unknown key is named in the path itself, with the closest known key when there is one. */
export function describeIssuesAsJsonPath(error: z.ZodError, knownKeysAt: (path: readonly PropertyKey[]) => string[] = () => []): ValidationProblem[] {
  const problems: ValidationProblem[] = [];
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeysAt(issue.path);
      for (const key of issue.keys) {
        const suggestion = closest(key, known);
        problems.push({ path: jsonPath([...issue.path, key]), message: `unknown key${suggestion ? ` (did you mean "${suggestion}"?)` : ''}` });
      }
    } else {
      problems.push({ path: jsonPath(issue.path), message: issue.message });
    }
  }
  return problems;
}

function closest(key: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of known) {
    const distance = editDistance(key, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length];
}

function knownPlanKeys(path: readonly PropertyKey[]): string[] {
  let schema: z.ZodType = ratePlanPricingSchema;
  for (const segment of path) {
    const next = childSchema(schema, segment);
    if (!next) return [];
    schema = next;
  }
  const shape = objectShape(schema);
  return shape ? Object.keys(shape) : [];
}

function unwrap(schema: z.ZodType): z.ZodType {
  let current: z.ZodType = schema;
  for (;;) {
    if (current instanceof z.ZodOptional || current instanceof z.ZodNullable) current = current.unwrap() as z.ZodType;
    else if (current instanceof z.ZodPipe) current = current.in as z.ZodType;
    else return current;
  }
}

function objectShape(schema: z.ZodType): Record<string, z.ZodType> | undefined {
  const inner = unwrap(schema);
  return inner instanceof z.ZodObject ? (inner.shape as Record<string, z.ZodType>) : undefined;
}

function childSchema(schema: z.ZodType, segment: PropertyKey): z.ZodType | undefined {
  const inner = unwrap(schema);
  if (inner instanceof z.ZodArray) return inner.element as z.ZodType;
  if (inner instanceof z.ZodRecord) return inner.valueType as z.ZodType;
  return objectShape(inner)?.[String(segment)];
}

const PROTO_KEY = '__proto__';

/**
 * The `__proto__` keys of the plan's records (tool_invocations, tool_aliases, tool_multipliers,
 * token_multipliers.by_model, mcp_servers and each server's tool_invocations: every z.record of
 * the schema), read from the raw input before zod: JSON.parse keeps `"__proto__"` as an own key,
 * but a zod record drops it without a word, so `{"*": "0.01", "__proto__": "5"}` would be accepted
 * as `{"*": "0.01"}` and a tool named `__proto__` (a legal tool name in events) billed at "*".
 * The walk follows the schema, so it goes no deeper than the plan does. (A `__proto__` key of a
 * fixed-shape object is an unknown key: zod names it.)
 */
function protoKeyProblems(input: unknown, schema: z.ZodType, path: PathSegment[] = [], problems: CrossFieldProblem[] = []): CrossFieldProblem[] {
  if (typeof input !== 'object' || input === null) return problems;
  const inner = unwrap(schema);
  if (inner instanceof z.ZodArray) {
    if (Array.isArray(input)) {
      for (let index = 0; index < input.length; index++) protoKeyProblems(input[index], inner.element as z.ZodType, [...path, index], problems);
    }
  } else if (inner instanceof z.ZodRecord && !Array.isArray(input)) {
    for (const [key, value] of Object.entries(input)) {
      if (key === PROTO_KEY) {
        problems.push({
          path: [...path, key],
          message:
            '"__proto__" cannot be a key of a rate plan: it would be dropped, not applied (a JavaScript object does not keep it as a name); a tool, model or MCP server named "__proto__" cannot be listed and takes the plan\'s default prices',
        });
      } else {
        protoKeyProblems(value, inner.valueType as z.ZodType, [...path, key], problems);
      }
    }
  } else if (inner instanceof z.ZodObject && !Array.isArray(input)) {
    const shape = inner.shape as Record<string, z.ZodType>;
    for (const [key, value] of Object.entries(input)) {
      if (Object.hasOwn(shape, key)) protoKeyProblems(value, shape[key], [...path, key], problems);
    }
  }
  return problems;
}

/**
 * Validates a rate plan's pricing JSON. Every problem comes back with the JSON path it concerns
 * (`$.duration_buckets[2].max_seconds`) and a sentence saying what to change.
 */
export type ValidatedPlan = { ok: true; plan: RatePlanPricing; warnings: ValidationProblem[] } | { ok: false; errors: ValidationProblem[] };

/** The key the article wraps its pricing in: `{"dimensionPricing": {...}}` is read as the pricing inside. */
const WRAPPER_KEY = 'dimensionPricing';

export function validateRatePlan(input: unknown): ValidatedPlan {
  if (typeof input === 'object' && input !== null && !Array.isArray(input) && Object.hasOwn(input, WRAPPER_KEY)) {
    const { [WRAPPER_KEY]: inner, ...beside } = input as Record<string, unknown>;
    const extra = Object.keys(beside).map((key) => ({ path: jsonPath([key]), message: `unknown key beside "${WRAPPER_KEY}": put every pricing field inside it, or leave the wrapper out` }));
    const nested = validateUnwrapped(inner);
    const prefix = (problems: ValidationProblem[]) => problems.map((problem) => ({ path: `$.${WRAPPER_KEY}${problem.path.slice(1)}`, message: problem.message }));
    if (!nested.ok) return { ok: false, errors: [...extra, ...prefix(nested.errors)] };
    if (extra.length > 0) return { ok: false, errors: extra };
    return { ok: true, plan: nested.plan, warnings: prefix(nested.warnings) };
  }
  return validateUnwrapped(input);
}

function validateUnwrapped(input: unknown): ValidatedPlan {
  const protoKeys = protoKeyProblems(input, ratePlanPricingSchema).map((problem) => ({ path: jsonPath(problem.path), message: problem.message }));
  const parsed = ratePlanPricingSchema.safeParse(input);
  if (parsed.success) {
    if (protoKeys.length > 0) return { ok: false, errors: protoKeys };
    const warnings = planWarnings(parsed.data).map((warning) => ({ path: jsonPath(warning.path), message: warning.message }));
    return { ok: true, plan: parsed.data, warnings };
  }
  const errors = [...protoKeys, ...describeIssuesAsJsonPath(parsed.error, knownPlanKeys)];
  const reported = new Set(errors.map((problem) => `${problem.path}\n${problem.message}`));
  for (const problem of orderProblems(input)) {
    const described = { path: jsonPath(problem.path), message: problem.message };
    if (!reported.has(`${described.path}\n${described.message}`)) errors.push(described);
  }
  return { ok: false, errors };
}

export type { ValidationProblem };
