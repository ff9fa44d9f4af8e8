import { execFileSync } from 'node:child_process';
import { projectPath } from '../../pipeline/paths.js';

/** The tests talk to real Redis, PostgreSQL and ClickHouse: bring them up first (idempotent). */
export default function setup(): void {
  execFileSync('bash', [projectPath('ops', 'services.sh')], { stdio: 'inherit' });
}
