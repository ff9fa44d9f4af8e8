// npm run quote -- --plan plan.json --usage usage.json [--terms terms.json]
// Prints the quote as JSON; on bad input, says what is wrong on stderr and exits with code 2.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { invoiceJson, parseQuoteRequest, quote } from '../domain/rating/quote.js';
import { RatingError } from '../domain/rating/rate-period.js';

const USAGE = 'usage: npm run quote -- --plan plan.json --usage usage.json [--terms terms.json]';

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(2);
}

function readJson(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    fail(`cannot read ${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    fail(`${path} is not JSON: ${(err as Error).message}`);
  }
}

let options: { plan?: string; usage?: string; terms?: string };
try {
  options = parseArgs({ options: { plan: { type: 'string' }, usage: { type: 'string' }, terms: { type: 'string' } } }).values;
} catch (err) {
  fail(`${(err as Error).message}\n${USAGE}`);
}
if (!options.plan || !options.usage) fail(USAGE);

const files = { plan: options.plan, usage: options.usage, terms: options.terms };
const parsed = parseQuoteRequest({
  plan: readJson(files.plan),
  usage: readJson(files.usage),
  ...(files.terms ? { terms: readJson(files.terms) } : {}),
});
/** "$.plan.duration_buckets[1].rate" is reported as "plan.json: $.duration_buckets[1].rate". */
function located(problems: { path: string; message: string }[]): string {
  return problems
    .map(({ path, message }) => {
      const [, part, rest] = /^\$\.(plan|usage|terms)(.*)$/.exec(path) ?? [];
      return part ? `${files[part as keyof typeof files]}: $${rest}: ${message}` : `${path}: ${message}`;
    })
    .join('\n  ');
}
if (!parsed.ok) fail(`invalid input:\n  ${located(parsed.errors)}`);
if (parsed.request.warnings.length > 0) process.stderr.write(`warning:\n  ${located(parsed.request.warnings)}\n`);
try {
  const { plan, usage, terms, warnings } = parsed.request;
  process.stdout.write(`${JSON.stringify(invoiceJson(quote(plan, usage, terms, warnings)), null, 2)}\n`);
} catch (err) {
  if (err instanceof RatingError) fail(err.message);
  throw err;
}
