/**
 * The operator's version: the `version` of the package.json it was built from. Read from the
 * file, not from `npm_package_version`, which npm sets only under `npm run` and which is unset
 * when the image runs `node dist/operator/main.js`. The image copies package.json next to dist/
 * (see the Dockerfile), so the file found here is the one of the build.
 */
import { readFileSync } from 'node:fs';

function findVersion(): string {
  // operator/version.ts in a checkout, dist/operator/version.js in a build or the image.
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg: unknown = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8'));
      const name: unknown = typeof pkg === 'object' && pkg !== null ? Reflect.get(pkg, 'name') : undefined;
      const version: unknown =
        typeof pkg === 'object' && pkg !== null ? Reflect.get(pkg, 'version') : undefined;
      if (name === 'cannes-operator' && typeof version === 'string') return version;
    } catch {
      // Not there: try the next place.
    }
  }
  return 'unknown';
}

export const OPERATOR_VERSION = findVersion();
