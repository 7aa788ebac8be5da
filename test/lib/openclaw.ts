import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_GATEWAY_IMAGE } from '../../operator/api/schema.ts';
import { imageVersion } from '../../operator/host/compose.ts';

/**
 * The real OpenClaw gateway for tests, installed by `make openclaw` (mk/openclaw.mk) into
 * `$CANNES_CACHE/openclaw-<version>` (not a project dependency). The version is the one of
 * the default gateway image, so the tests exercise what a default Vps runs.
 */
export const OPENCLAW_VERSION = imageVersion(DEFAULT_GATEWAY_IMAGE) ?? 'unknown';

export function openclawDir(): string {
  const fromEnv = process.env['OPENCLAW_DIR'];
  if (fromEnv) return fromEnv;
  const cache = process.env['CANNES_CACHE'] ?? join(homedir(), '.cache', 'cannes');
  return join(cache, `openclaw-${OPENCLAW_VERSION}`);
}

/** The package directory (what the image's working directory holds). */
export function openclawPackageDir(): string {
  return join(openclawDir(), 'node_modules', 'openclaw');
}

/** `openclaw.mjs`, the entry the image's command runs. Throws with the fix when missing. */
export function openclawEntry(): string {
  const entry = join(openclawPackageDir(), 'openclaw.mjs');
  if (!existsSync(entry)) {
    throw new Error(
      `OpenClaw ${OPENCLAW_VERSION} is not installed at ${openclawDir()}: run \`make openclaw\``,
    );
  }
  return entry;
}
