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
    writeFileSync(join(dir, 'plan.json'), JSON.stringify({ currency: 'USD', duration_buckets: [{ max_seconds: null, rate: 1 }, { max_seconds: 60, rate: 1 }] }));
    writeFileSync(join(dir, 'usage.json'), JSON.stringify({ calls: [{ count: 1.5 }] }));
    const { code, stdout, stderr } = runQuote('--plan', join(dir, 'plan.json'), '--usage', join(dir, 'usage.json'));
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toContain(`${join(dir, 'plan.json')}: $.duration_buckets[0].max_seconds: only the last bucket may be open-ended`);
    expect(stderr).toContain(`${join(dir, 'usage.json')}: $.calls[0].count: must be a whole number`);
  });

  it("quotes the article's plan with its bounded last bucket, warning on stderr and in the JSON", () => {
    const dir = mkdtempSync(join(tmpdir(), 'quote-'));
    const pricing = {
      dimensionPricing: {
        tool_invocations: { transform_schema: 0.1, '*': 0.002 },
        duration_buckets: [
          { max_seconds: 60, rate: 0.1, unit: 'per_invocation' },
          { max_seconds: 300, rate: 0.5, unit: 'per_invocation' },
          { max_seconds: 3600, rate: 2.0, unit: 'per_invocation' },
        ],
      },
    };
    writeFileSync(join(dir, 'plan.json'), JSON.stringify({ currency: 'USD', ...pricing }));
    writeFileSync(join(dir, 'usage.json'), JSON.stringify({ calls: [{ tool: 'transform_schema', count: 1, duration_ms: 7_200_000 }] }));
    const { code, stdout, stderr } = runQuote('--plan', join(dir, 'plan.json'), '--usage', join(dir, 'usage.json'));
    expect(code).toBe(0);
    const warning = "the last bucket is bounded: calls longer than 3600 s are priced at this bucket's rate (2)";
    expect(stderr).toContain(`${join(dir, 'plan.json')}: $.dimensionPricing.duration_buckets[2].max_seconds: ${warning}`);
    const quoted = JSON.parse(stdout);
    expect(quoted.total).toBe('2.10'); // 0.10 + the two-hour call at the last bucket's 2.00
    expect(quoted.warnings).toEqual([{ path: '$.plan.dimensionPricing.duration_buckets[2].max_seconds', message: expect.stringContaining(warning) }]);
  });

  it('exits with 2 on a missing argument or unreadable file', () => {
    expect(runQuote('--plan', 'examples/plan.json')).toMatchObject({ code: 2, stderr: expect.stringContaining('usage: npm run quote') });
    expect(runQuote('--plan', 'nope.json', '--usage', 'examples/usage.json')).toMatchObject({ code: 2, stderr: expect.stringContaining('cannot read nope.json') });
  });
});
