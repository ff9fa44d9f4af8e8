// The layering rule of README "Layout", checked by `npm run lint` (dependency-cruiser).
// Test code (*.test.ts, test/, and the test helpers named below) may import from any layer.
// Benchmarks (loadtest/) and walkthroughs (examples/) build scratch worlds with the test helpers, like the tests do.
const TEST = '(\\.test\\.ts$|^test/|/testing/|^stages/testing\\.ts$|^api/admin/test-world\\.ts$|^domain/rating/test-support\\.ts$)';
const outside = (...allowed) => `^(?!(${allowed.join('|')})/)[^/]+/`;
// Only the project's own files are layered; packages and Node built-ins may be used anywhere.
const local = { dependencyTypes: ['local'] };

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', comment: 'No import circles.', from: {}, to: { circular: true } },
    {
      name: 'domain-is-pure',
      severity: 'error',
      comment: 'domain/ (billing logic, no I/O) imports only domain/.',
      from: { path: '^domain/', pathNot: TEST },
      to: { path: outside('domain'), ...local },
    },
    {
      name: 'schemas-below-store',
      severity: 'error',
      comment: 'schemas/ imports only domain/ and schemas/.',
      from: { path: '^schemas/', pathNot: TEST },
      to: { path: outside('domain', 'schemas'), ...local },
    },
    {
      name: 'pipeline-knows-no-billing',
      severity: 'error',
      comment: 'pipeline/ is the runtime every stage shares; it imports only pipeline/.',
      from: { path: '^pipeline/', pathNot: TEST },
      to: { path: outside('pipeline'), ...local },
    },
    {
      name: 'store-below-api-and-stages',
      severity: 'error',
      comment: 'store/ imports domain/, schemas/ and pipeline/ only.',
      from: { path: '^store/', pathNot: TEST },
      to: { path: outside('store', 'domain', 'schemas', 'pipeline'), ...local },
    },
    {
      name: 'api-meets-stages-only-below',
      severity: 'error',
      comment: 'api/ imports store/, domain/, schemas/ and pipeline/, never stages/ or ops/.',
      from: { path: '^api/', pathNot: TEST },
      to: { path: outside('api', 'store', 'domain', 'schemas', 'pipeline'), ...local },
    },
    {
      name: 'stages-meet-api-only-below',
      severity: 'error',
      comment: 'stages/ imports store/, domain/, schemas/ and pipeline/, never api/ or ops/.',
      from: { path: '^stages/', pathNot: TEST },
      to: { path: outside('stages', 'store', 'domain', 'schemas', 'pipeline'), ...local },
    },
    {
      name: 'a-stage-imports-no-other-stage',
      severity: 'error',
      comment: 'Each stage stands alone; stages/registry.ts is the one place that knows them all.',
      from: { path: '^stages/([^/]+)/', pathNot: TEST },
      to: { path: '^stages/', pathNot: ['^stages/$1/'] },
    },
    {
      name: 'the-sdk-stands-alone',
      severity: 'error',
      comment: 'sdk/ is its own package, published on its own: it imports nothing of the service.',
      from: { path: '^sdk/', pathNot: TEST },
      to: { path: '^(?!sdk/)[^/]+/', ...local },
    },
    {
      name: 'the-proxy-is-a-client',
      severity: 'error',
      comment: 'mcp-proxy/ talks to the service over HTTP like any client: it imports the SDK and pipeline/ (logging) only.',
      from: { path: '^mcp-proxy/', pathNot: TEST },
      to: { path: outside('mcp-proxy', 'sdk', 'pipeline'), ...local },
    },
    {
      name: 'no-test-code-in-the-product',
      severity: 'error',
      comment: 'Product code never imports test files or test helpers.',
      from: { pathNot: [TEST, '^loadtest/', '^examples/'] },
      to: { path: TEST },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(node_modules|dist)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
