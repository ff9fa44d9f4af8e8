// Runs one stage worker: `node dist/stages/run.js <stage>` (or `npm run stage -- <stage>`).
// Start more processes of a stage (with distinct WORKER_SLOT) to share its work.
import { runStageProcess } from '../pipeline/process.js';
import { STAGES, TOPOLOGY, stageByName } from './registry.js';

const name = process.argv[2];
const stage = name ? stageByName(name) : undefined;
if (!stage) {
  console.error(`usage: run <stage>\n  stages: ${STAGES.map((s) => s.name).join(', ')}`);
  process.exit(2);
}
await runStageProcess(stage, TOPOLOGY);
