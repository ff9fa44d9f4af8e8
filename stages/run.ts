// Runs stage workers in this process: `node dist/stages/run.js <stage>[,<stage>...]`
// (or `npm run stage -- price`, `npm run stage -- session-update,cogs`). Start more processes of a
// stage (with distinct WORKER_SLOT) to share its work.
import { runStageProcess } from '../pipeline/process.js';
import { STAGES, TOPOLOGY, stageByName } from './registry.js';

const names = (process.argv[2] ?? '').split(',').filter(Boolean);
const stages = names.map(stageByName);
if (names.length === 0 || stages.some((stage) => !stage)) {
  const unknown = names.filter((_, i) => !stages[i]);
  console.error(
    `${unknown.length ? `unknown stage: ${unknown.join(', ')}\n` : ''}usage: run <stage>[,<stage>...]\n  stages: ${STAGES.map((s) => s.name).join(', ')}`,
  );
  process.exit(2);
}
await runStageProcess(stages.filter((stage) => stage !== undefined), TOPOLOGY);
