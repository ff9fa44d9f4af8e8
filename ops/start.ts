// Runs the whole pipeline on this machine: the HTTP server (ingest, authorize, admin API)
// and every stage worker as its own process, under one supervisor.
//   npm start                                  one process per stage
//   npm start -- --workers price=2,ledger-write=2 --api-processes 2
import { fileURLToPath } from 'node:url';
import { loadConfigOrExit } from '../pipeline/config.js';
import { createLogger } from '../pipeline/logger.js';
import { supervise, type ChildSpec } from '../pipeline/supervisor.js';
import { STAGES } from '../stages/registry.js';

export interface StartOptions {
  workers?: Record<string, number>;
  apiProcesses?: number;
  /** Stage i (in spawn order) serves its metrics on base + i; 0 serves none. */
  metricsBasePort?: number;
  env?: Record<string, string>;
}

/** The processes of a full pipeline, from source (tsx) or from dist/, whichever this file runs as. */
export function pipelineProcesses(options: StartOptions = {}): ChildSpec[] {
  const fromSource = import.meta.url.endsWith('.ts');
  const ext = fromSource ? 'ts' : 'js';
  const entry = (path: string) => fileURLToPath(new URL(`../${path}.${ext}`, import.meta.url));
  const nodeArgs = fromSource ? ['--import', 'tsx'] : [];
  const basePort = options.metricsBasePort ?? 9400;
  const specs: ChildSpec[] = [
    {
      name: 'api',
      command: process.execPath,
      args: [...nodeArgs, entry('api/main')],
      env: { ...options.env, API_PROCESSES: String(options.apiProcesses ?? 1) },
    },
  ];
  let port = basePort;
  for (const stage of STAGES) {
    const count = options.workers?.[stage.name] ?? 1;
    for (let slot = 0; slot < count; slot++) {
      specs.push({
        name: `${stage.name}#${slot}`,
        command: process.execPath,
        args: [...nodeArgs, entry('stages/run'), stage.name],
        env: { ...options.env, WORKER_SLOT: String(slot), METRICS_PORT: String(basePort === 0 ? 0 : port++) },
      });
    }
  }
  return specs;
}

export function parseWorkers(text: string | undefined): Record<string, number> {
  const workers: Record<string, number> = {};
  for (const part of (text ?? '').split(',').filter(Boolean)) {
    const [name, count] = part.split('=');
    if (!STAGES.some((s) => s.name === name) || !/^[1-9]\d*$/.test(count ?? '')) {
      throw new Error(`--workers: "${part}" is not <stage>=<count>; stages: ${STAGES.map((s) => s.name).join(', ')}`);
    }
    workers[name] = Number(count);
  }
  return workers;
}

function argValue(flag: string): string | undefined {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const config = loadConfigOrExit();
  const log = createLogger('supervisor');
  const supervisor = supervise(
    pipelineProcesses({
      workers: parseWorkers(argValue('--workers')),
      apiProcesses: Number(argValue('--api-processes') ?? 1),
      metricsBasePort: config.METRICS_BASE_PORT,
    }),
    log,
  );
  const shutdown = async () => {
    log.info('stopping every process');
    await supervisor.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown());
  process.on('SIGINT', () => void shutdown());
}
