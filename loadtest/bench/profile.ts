// Summarizes a V8 .cpuprofile (node --cpu-prof): where the process spent its CPU, by function
// (self time), and by package or project file. The benchmark runs it on the profiles of
// `--profile <kind>`; by hand: `npx tsx loadtest/bench/profile.ts <file.cpuprofile> [top]`.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileLine {
  name: string;
  selfMs: number;
  pct: number;
}

export interface ProfileSummary {
  totalMs: number;
  /** Share of samples not idle (the process was on a CPU or in GC). */
  busyPct: number;
  functions: ProfileLine[];
  /** By where the code lives: a package under node_modules, a project file, node internals, GC, idle. */
  modules: ProfileLine[];
}

function moduleOf(url: string, name: string): string {
  if (name === '(idle)' || name === '(program)' || name === '(garbage collector)') return name;
  if (!url) return '(native)';
  if (url.startsWith('node:')) return 'node:' + url.slice(5).split('/')[0];
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 14).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  const root = url.replace(/^file:\/\//, '');
  const i = root.search(/\/(dist\/)?(pipeline|stages|store|domain|schemas|api|ops|loadtest)\//);
  return i >= 0 ? root.slice(i + 1).replace(/^dist\//, '') : root;
}

export function summarizeProfile(file: string, top = 15): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (const [i, id] of profile.samples.entries()) selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  const fn = new Map<string, number>();
  const mod = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id)!;
    const { functionName, url, lineNumber } = node.callFrame;
    const name = functionName || '(anonymous)';
    total += us;
    if (name === '(idle)') idle += us;
    const where = moduleOf(url, name);
    const key = url ? `${name} ${where}:${lineNumber + 1}` : name;
    fn.set(key, (fn.get(key) ?? 0) + us);
    mod.set(where, (mod.get(where) ?? 0) + us);
  }
  const busy = total - idle;
  const lines = (map: Map<string, number>) =>
    [...map]
      .filter(([name]) => name !== '(idle)')
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, selfMs: Math.round(us / 1000), pct: busy ? Math.round((us / busy) * 1000) / 10 : 0 }));
  return {
    totalMs: Math.round(total / 1000),
    busyPct: total ? Math.round((busy / total) * 1000) / 10 : 0,
    functions: lines(fn),
    modules: lines(mod),
  };
}

export function formatProfile(title: string, summary: ProfileSummary): string {
  const out = [`${title}: ${summary.totalMs} ms sampled, ${summary.busyPct}% busy; share of busy time:`];
  out.push('  by module:');
  for (const line of summary.modules) out.push(`    ${line.pct.toFixed(1).padStart(5)}%  ${line.name}`);
  out.push('  by function (self):');
  for (const line of summary.functions) out.push(`    ${line.pct.toFixed(1).padStart(5)}%  ${line.name}`);
  return out.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [file, top] = process.argv.slice(2);
  if (!file) {
    console.error('usage: tsx loadtest/bench/profile.ts <file.cpuprofile> [top]');
    process.exit(2);
  }
  console.log(formatProfile(file, summarizeProfile(file, Number(top ?? 25))));
}
