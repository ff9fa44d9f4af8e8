import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // The SDK workspace from source, as tsconfig.json's paths say (its package exports point at dist/).
  resolve: {
    alias: [
      { find: /^@agentmeter\/sdk\/mcp$/, replacement: fileURLToPath(new URL('./sdk/src/mcp.ts', import.meta.url)) },
      { find: /^@agentmeter\/sdk$/, replacement: fileURLToPath(new URL('./sdk/src/index.ts', import.meta.url)) },
    ],
  },
  test: {
    include: ['**/*.test.ts'],
    exclude: ['node_modules/**', '**/dist/**'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
