import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectPath } from '../pipeline/paths.js';

function runQuote(...args: string[]) {
  const result = spawnSync(process.execPath, ['--import', 'tsx', projectPath('ops', 'quote.ts'), ...args], { cwd: projectPath(), encoding: 'utf8' });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('npm run quote', () => {
  it('prints the quote of the examples as JSON', () => {
    const { code, stdout } = runQuote('--plan', 'examples/plan.json', '--usage', 'examples/usage.json');
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toMatchObject({ currency: 'USD', total: '15.07', total_exact: '15.07288', calls: 105, sessions: 2 });
  });

  it('names the file and JSON path of each problem, and exits with 2', () => {
    const dir = mkdtempSync(join(tmpdir(), 'quote-'));
    writeFileSync(join(dir, 'plan.json'), JSON.stringify({ currency: 'USD', duration_buckets: [{ max_seconds: 60, rate: 1 }] }));
    writeFileSync(join(dir, 'usage.json'), JSON.stringify({ calls: [{ count: 1.5 }] }));
    const { code, stdout, stderr } = runQuote('--plan', join(dir, 'plan.json'), '--usage', join(dir, 'usage.json'));
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toContain(`${join(dir, 'plan.json')}: $.duration_buckets[0].max_seconds: calls longer than 60 s would be unpriced`);
    expect(stderr).toContain(`${join(dir, 'usage.json')}: $.calls[0].count: must be a whole number`);
  });

  it('exits with 2 on a missing argument or unreadable file', () => {
    expect(runQuote('--plan', 'examples/plan.json')).toMatchObject({ code: 2, stderr: expect.stringContaining('usage: npm run quote') });
    expect(runQuote('--plan', 'nope.json', '--usage', 'examples/usage.json')).toMatchObject({ code: 2, stderr: expect.stringContaining('cannot read nope.json') });
  });
});
