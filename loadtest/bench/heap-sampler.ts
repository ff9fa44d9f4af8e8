// Loaded with `node --import` into a pipeline process by `npm run bench -- --heap-profile <kinds>`:
// samples what the process allocates (collected objects included: most of a stage's garbage dies
// young) for HEAP_SAMPLE_FOR_MS, from HEAP_SAMPLE_AFTER_MS after start, with V8's sampling heap
// profiler, and writes heap.<pid>.json to HEAP_SAMPLE_DIR: the window, the bytes, and the top
// allocating functions (each with the two frames above it). The benchmark divides the bytes by
// the events ledgered in the window.
import type { HeapProfiler } from 'node:inspector';
import { Session } from 'node:inspector/promises';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

export interface HeapSample {
  pid: number;
  fromMs: number;
  toMs: number;
  bytes: number;
  top: { bytes: number; site: string }[];
}

const dir = process.env.HEAP_SAMPLE_DIR;
const after = Number(process.env.HEAP_SAMPLE_AFTER_MS ?? 20_000);
const sampleFor = Number(process.env.HEAP_SAMPLE_FOR_MS ?? 30_000);

const frame = (node: ProfileNode) =>
  `${node.callFrame.functionName || '(anonymous)'} ${node.callFrame.url.replace(/^.*\/(dist|node_modules)\//, '')}:${node.callFrame.lineNumber + 1}`;

async function sample(directory: string): Promise<void> {
  const session = new Session();
  session.connect();
  await session.post('HeapProfiler.enable');
  const fromMs = Date.now();
  // includeObjectsCollectedBy* (V8 10+; not in @types/node yet): count what was allocated, not only what is alive at the end.
  const params: HeapProfiler.StartSamplingParameterType & { includeObjectsCollectedByMajorGC: boolean; includeObjectsCollectedByMinorGC: boolean } = {
    samplingInterval: 4096,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  };
  await session.post('HeapProfiler.startSampling', params);
  await new Promise((resolve) => setTimeout(resolve, sampleFor).unref());
  const { profile } = (await session.post('HeapProfiler.stopSampling')) as { profile: { head: ProfileNode } };
  const toMs = Date.now();
  session.disconnect();
  const bySite = new Map<string, number>();
  let bytes = 0;
  const walk = (node: ProfileNode, above: string[]) => {
    const here = frame(node);
    if (node.selfSize > 0) {
      bytes += node.selfSize;
      const site = [here, ...above.slice(-2).reverse()].join(' < ');
      bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize);
    }
    for (const child of node.children) walk(child, [...above.slice(-1), here]);
  };
  walk(profile.head, []);
  const top = [...bySite].sort((a, b) => b[1] - a[1]).slice(0, 40).map(([site, size]) => ({ bytes: size, site }));
  const result: HeapSample = { pid: process.pid, fromMs, toMs, bytes, top };
  writeFileSync(join(directory, `heap.${process.pid}.json`), JSON.stringify(result));
}

if (dir) setTimeout(() => void sample(dir).catch((err) => console.error(`heap-sampler: ${(err as Error).message}`)), after).unref();
