import type { Logger } from './logger.js';
import { partitionedKey } from './keys.js';
import type { scripted } from './scripts.js';
import type { HarnessOptions, StageDefinition } from './stage.js';

/** Trims the stage's input below every group's position, and its terminal outputs by length. */
export class Trimmer {
  private timer?: NodeJS.Timeout;
  private running = false;

  constructor(
    private readonly stage: StageDefinition<unknown>,
    private readonly redis: ReturnType<typeof scripted>,
    private readonly options: HarnessOptions,
    private readonly partitions: number[],
    private readonly log: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.trimOnce(), this.options.config.TRIM_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async trimOnce(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const { config, topology } = this.options;
    const consumed = new Set(topology.map((t) => t.stream));
    try {
      for (const p of this.partitions) {
        await this.redis.trimAcked(partitionedKey(config.REDIS_PREFIX, this.stage.input, p));
        for (const output of this.stage.outputs) {
          if (consumed.has(output)) continue;
          // A terminal stream (rejected events): nobody consumes it, it is kept for operators up to a bound.
          await this.redis.xtrim(partitionedKey(config.REDIS_PREFIX, output, p), 'MAXLEN', '~', config.REJECTED_MAXLEN);
        }
      }
    } catch (err) {
      this.log.warn({ err }, 'trim failed');
    } finally {
      this.running = false;
    }
  }
}
