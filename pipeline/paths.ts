import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/** The repository root, found by walking up to package.json; works from source (tsx, vitest) and from dist/. */
export function projectPath(...parts: string[]): string {
  if (!root) {
    let dir = dirname(fileURLToPath(import.meta.url));
    while (!existsSync(join(dir, 'package.json'))) {
      const parent = dirname(dir);
      if (parent === dir) throw new Error('agentmeter: package.json not found above ' + fileURLToPath(import.meta.url));
      dir = parent;
    }
    root = dir;
  }
  return join(root, ...parts);
}
