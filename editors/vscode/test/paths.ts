/** Paths of the extension's own files, from the compiled test (out/test/...) or the source. */

import * as fs from 'fs';
import * as path from 'path';

function findRoot(start: string): string {
  let dir = start;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'tsconfig.json'))) {
      return dir;
    }
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new Error(`no extension folder above ${start}`);
    }
    dir = parent;
  }
}

export const EXTENSION_ROOT = findRoot(__dirname);

export function readPackageJson(): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(path.join(EXTENSION_ROOT, 'package.json'), 'utf8')) as Record<string, unknown>;
}
