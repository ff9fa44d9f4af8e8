// A stage process for the harness's SIGTERM test: forwards entries unchanged, 150 ms per batch of 10.
import { runStageProcess } from '../../pipeline/process.js';
import { emit, type AnyStage } from '../../pipeline/stage.js';

const slow: AnyStage = {
  name: 'slow',
  input: 'slow:in',
  outputs: ['slow:out'],
  batchSize: 10,
  async setup() {
    return {
      async handle(batch) {
        await new Promise((r) => setTimeout(r, 150));
        return batch.map((e) => ({ outputs: [emit('slow:out', e.payload)] }));
      },
    };
  },
};

await runStageProcess([slow], [{ stream: 'slow:in', group: 'slow' }]);
