import { readFileSync } from 'node:fs';
import type { Redis } from './redis.js';
import { projectPath } from './paths.js';

/**
 * The Lua scripts of pipeline/lua, one file each; a fixed key count is part of the file name
 * (BullMQ's convention), a variable one is passed per call. ioredis sends EVALSHA and falls
 * back to EVAL once per connection.
 */
type ScriptArg = string | Buffer | number;

interface ScriptedRedis {
  ackAndForward(numKeys: number, ...args: ScriptArg[]): Promise<(string | null)[]>;
  deadLetter(...args: ScriptArg[]): Promise<number>;
  splitBlock(...args: ScriptArg[]): Promise<number>;
  trimAcked(...args: ScriptArg[]): Promise<number>;
  appendAtCursor(...args: ScriptArg[]): Promise<number>;
  forwardOnce(numKeys: number, ...args: ScriptArg[]): Promise<(string | null)[]>;
}

const SCRIPTS: { name: keyof ScriptedRedis; file: string; keys?: number }[] = [
  { name: 'ackAndForward', file: 'ackAndForward.lua' },
  { name: 'deadLetter', file: 'deadLetter-3.lua', keys: 3 },
  { name: 'splitBlock', file: 'splitBlock-2.lua', keys: 2 },
  { name: 'trimAcked', file: 'trimAcked-1.lua', keys: 1 },
  { name: 'appendAtCursor', file: 'appendAtCursor-2.lua', keys: 2 },
  { name: 'forwardOnce', file: 'forwardOnce.lua' },
];

const loaded = new WeakSet<Redis>();

export function scripted(redis: Redis): Redis & ScriptedRedis {
  if (!loaded.has(redis)) {
    for (const script of SCRIPTS) {
      const lua = readFileSync(projectPath('pipeline', 'lua', script.file), 'utf8');
      redis.defineCommand(script.name, script.keys === undefined ? { lua } : { lua, numberOfKeys: script.keys });
    }
    loaded.add(redis);
  }
  return redis as Redis & ScriptedRedis;
}
