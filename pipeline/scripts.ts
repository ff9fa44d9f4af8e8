import { readFileSync } from 'node:fs';
import type { Redis } from './redis.js';
import { projectPath } from './paths.js';
import type { BlockParts } from './blocks.js';

/**
 * The Lua scripts of pipeline/lua, one file each; a fixed key count is part of the file name
 * (BullMQ's convention), a variable one is passed per call. ioredis sends EVALSHA and falls
 * back to EVAL once per connection.
 */
type ScriptArg = string | Buffer | number | BlockParts;

interface ScriptedRedis {
  ackAndForward(numKeys: number, ...args: ScriptArg[]): Promise<(string | null)[]>;
  deadLetter(...args: ScriptArg[]): Promise<number>;
  splitBlock(...args: ScriptArg[]): Promise<number>;
  trimAcked(...args: ScriptArg[]): Promise<number>;
  forwardOnce(numKeys: number, ...args: ScriptArg[]): Promise<(string | null)[]>;
  oldestWaiting(numKeys: number, ...keys: string[]): Promise<number[]>;
  advanceOnce(numKeys: number, ...args: ScriptArg[]): Promise<(string | number | null | [string])[]>;
  /** The entries read, or 0 when ids held were given and none of them comes next for the group: the caller reads plainly. */
  readKnownBuffer(stream: string, group: string, consumer: string, count: number, knownFrom: string, knownTo: string, ...held: string[]): Promise<KnownReadReply | 0>;
}

/** readKnown-1.lua's entries: per entry its id alone (its fields are held by the caller) or its id and fields. */
export type KnownReadReply = ([Buffer] | [Buffer, Buffer[]])[];

const SCRIPTS: { name: keyof ScriptedRedis | 'readKnown'; file: string; keys?: number; lib?: string }[] = [
  { name: 'ackAndForward', file: 'ackAndForward.lua', lib: 'window.lua' },
  { name: 'deadLetter', file: 'deadLetter-3.lua', keys: 3 },
  { name: 'splitBlock', file: 'splitBlock-2.lua', keys: 2 },
  { name: 'trimAcked', file: 'trimAcked-1.lua', keys: 1, lib: 'streamIds.lua' },
  { name: 'forwardOnce', file: 'forwardOnce.lua' },
  { name: 'oldestWaiting', file: 'oldestWaiting.lua' },
  { name: 'advanceOnce', file: 'advanceOnce.lua' },
  { name: 'readKnown', file: 'readKnown-1.lua', keys: 1, lib: 'streamIds.lua' },
];

const loaded = new WeakSet<Redis>();

/** A script's source, with a shared file of pipeline/lua/lib put before it (its local functions are then in scope). */
export function luaSource(file: string, lib?: string): string {
  const own = readFileSync(projectPath('pipeline', 'lua', file), 'utf8');
  return lib ? `${readFileSync(projectPath('pipeline', 'lua', 'lib', lib), 'utf8')}\n${own}` : own;
}

export function scripted(redis: Redis): Redis & ScriptedRedis {
  if (!loaded.has(redis)) {
    for (const script of SCRIPTS) {
      const lua = luaSource(script.file, script.lib);
      redis.defineCommand(script.name, script.keys === undefined ? { lua } : { lua, numberOfKeys: script.keys });
    }
    loaded.add(redis);
  }
  return redis as Redis & ScriptedRedis;
}

const replaceDefined = new WeakSet<Redis>();

/**
 * Sets `key` to `next.value` until `next.expiresAt` (unix ms), or deletes it (no `next`), only
 * while it still holds `seen`, the value the caller read and judged (null: the key was absent;
 * pipeline/lua/replaceIfUnchanged-1.lua). A value written in between (another writer's) stays.
 * Returns whether the key was changed.
 */
export async function replaceIfUnchanged(redis: Redis, key: string, seen: string | null, next?: { value: string; expiresAt: number }): Promise<boolean> {
  if (!replaceDefined.has(redis)) {
    redis.defineCommand('replaceIfUnchanged', { lua: luaSource('replaceIfUnchanged-1.lua'), numberOfKeys: 1 });
    replaceDefined.add(redis);
  }
  const scriptedRedis = redis as Redis & { replaceIfUnchanged(key: string, seen: string, value: string, expiresAt: string): Promise<number> };
  return (await scriptedRedis.replaceIfUnchanged(key, seen ?? '', next?.value ?? '', next ? String(next.expiresAt) : '')) === 1;
}
