// What the operator commands (status, dead-letters, demo-traffic) share: argument parsing,
// exit codes, a Redis connection that fails fast, and JSON that survives bigint and bytes.
import { fileURLToPath } from 'node:url';
import { Cluster, Redis as Standalone } from 'ioredis';
import { clusterNodes, type Redis } from '../pipeline/redis.js';
import { ConfigError } from '../pipeline/config.js';

/** A command line the command cannot make sense of: printed with the usage, exit code 2. */
export class UsageError extends Error {}

/** A request that is well formed but cannot be carried out (unknown stage, missing entry): exit code 1. */
export class CommandError extends Error {}

export interface ParsedArgs {
  positional: string[];
  flags: Map<string, string | true>;
}

/**
 * Parses `--name value`, `--name=value` and boolean `--name`; everything else is positional.
 * `--` ends the flags. An undeclared flag, or a value flag without a value, is a UsageError.
 */
export function parseArgs(argv: readonly string[], spec: { values?: readonly string[]; booleans?: readonly string[] }): ParsedArgs {
  const values = new Set(spec.values ?? []);
  const booleans = new Set(spec.booleans ?? []);
  const positional: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--') || arg === '-') {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    if (booleans.has(name)) {
      if (eq >= 0) throw new UsageError(`--${name} takes no value`);
      flags.set(name, true);
    } else if (values.has(name)) {
      const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
      if (value === undefined || value === '') throw new UsageError(`--${name} needs a value`);
      flags.set(name, value);
    } else {
      throw new UsageError(`unknown option ${arg}`);
    }
  }
  return { positional, flags };
}

export function stringFlag(args: ParsedArgs, name: string): string | undefined {
  const value = args.flags.get(name);
  return typeof value === 'string' ? value : undefined;
}

/** A numeric flag (integer unless `decimal`), at least `min`; the default when absent. */
export function numberFlag(args: ParsedArgs, name: string, fallback: number, options: { min?: number; decimal?: boolean } = {}): number {
  const text = stringFlag(args, name);
  if (text === undefined) return fallback;
  const value = Number(text);
  const min = options.min ?? 0;
  if (!Number.isFinite(value) || (!options.decimal && !Number.isInteger(value)) || value < min) {
    throw new UsageError(`--${name} must be ${options.decimal ? 'a number' : 'an integer'} >= ${min}, not "${text}"`);
  }
  return value;
}

/** JSON with bigint as decimal strings and bytes as base64, so every payload can be printed. */
export function toJson(value: unknown, indent?: number): string {
  return JSON.stringify(
    value,
    (_key, v: unknown) => {
      if (typeof v === 'bigint') return v.toString();
      if (v instanceof Uint8Array) return { base64: Buffer.from(v).toString('base64') };
      // Buffer.prototype.toJSON runs before the replacer sees it.
      if (v && typeof v === 'object' && (v as { type?: unknown }).type === 'Buffer' && Array.isArray((v as { data?: unknown }).data)) {
        return { base64: Buffer.from((v as { data: number[] }).data).toString('base64') };
      }
      return v;
    },
    indent,
  );
}

/**
 * A Redis connection for a command-line tool: no endless reconnecting, so an unreachable
 * Redis is a clear error within seconds rather than a hang.
 */
export async function connectCliRedis(url: string, name: string): Promise<Redis> {
  const nodeOptions = { connectionName: name, connectTimeout: 3_000, commandTimeout: 30_000, maxRetriesPerRequest: 1 };
  const seeds = clusterNodes(url);
  const redis: Redis = seeds
    ? new Cluster(seeds, { lazyConnect: true, redisOptions: nodeOptions, clusterRetryStrategy: () => null })
    : new Standalone(url, { ...nodeOptions, lazyConnect: true, retryStrategy: () => null });
  redis.on('error', () => {}); // reported by connect() or by the failing command
  try {
    await redis.connect();
  } catch (err) {
    redis.disconnect();
    throw new CommandError(`cannot reach Redis at ${url}: ${(err as Error).message} (is it running? try: npm run services)`);
  }
  return redis;
}

/** True when this module is the script node or tsx was asked to run. */
export function isMain(moduleUrl: string): boolean {
  return Boolean(process.argv[1]) && fileURLToPath(moduleUrl) === process.argv[1];
}

/** Runs a command's main function and turns its outcome into an exit code: 0, 1 (failure) or 2 (bad usage or configuration). */
export async function runCli(usage: string, main: (argv: string[]) => Promise<number | undefined>): Promise<void> {
  let code: number;
  try {
    code = (await main(process.argv.slice(2))) ?? 0;
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`error: ${err.message}\n\n${usage}`);
      code = 2;
    } else if (err instanceof ConfigError) {
      console.error(err.message);
      code = 2;
    } else if (err instanceof CommandError) {
      console.error(`error: ${err.message}`);
      code = 1;
    } else {
      console.error(err);
      code = 1;
    }
  }
  process.exitCode = code;
}
