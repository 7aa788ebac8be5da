import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { waitUntil } from '../../lib/wait.ts';
import { REPO_ROOT } from '../../rig/binaries.ts';
import type { Rig } from '../../rig/rig.ts';
import { useRig } from '../../rig/shared.ts';

export const CRDS_DIR = join(REPO_ROOT, 'crds');
export const EXAMPLES_DIR = join(REPO_ROOT, 'examples');

export function suffix(): string {
  return randomBytes(4).toString('hex');
}

/** Applies crds/ (idempotent: files share one API server) and waits until both kinds are served. */
export async function installCrds(rig: Rig): Promise<void> {
  await rig.kubectl(['apply', '--server-side', '--force-conflicts', '-f', CRDS_DIR]);
  await rig.kubectl([
    'wait',
    '--for=condition=Established',
    '--timeout=60s',
    'crd/vpses.cannes.dev',
    'crd/modelkeys.cannes.dev',
  ]);
  // The OpenAPI document (what `kubectl explain` reads) is republished a moment after a CRD becomes
  // Established: wait for both kinds to appear in it.
  let lastStatus = 0;
  await waitUntil(
    'cannes.dev/v1alpha1 OpenAPI to list Vps and ModelKey',
    async () => {
      const res = await rig.adminRequest('GET', '/openapi/v3/apis/cannes.dev/v1alpha1');
      lastStatus = res.status;
      const text = JSON.stringify(res.body);
      return res.status === 200 && text.includes('.v1alpha1.Vps"') && text.includes('.v1alpha1.ModelKey"');
    },
    60_000,
    { intervalMs: 250, failOnError: true, onTimeout: () => `last answer: HTTP ${lastStatus}` },
  );
}

/** The shared rig with crds/ installed, and a fresh namespace for one test file. */
export async function crdNamespace(
  prefix: string,
): Promise<{ rig: Rig; ns: string; drop: () => Promise<void> }> {
  const rig = await useRig();
  await installCrds(rig);
  return { rig, ...(await tempNamespace(rig, prefix)) };
}

/** A fresh namespace with a random suffix; returns its name and a function deleting it. */
export async function tempNamespace(
  rig: Rig,
  prefix: string,
): Promise<{ ns: string; drop: () => Promise<void> }> {
  const ns = `${prefix}-${suffix()}`;
  await rig.kubectl(['create', 'namespace', ns]);
  return {
    ns,
    // No controller-manager runs, so a deleted namespace stays Terminating; its objects are gone with the rig.
    drop: async () => {
      await rig.kubectl(['delete', 'namespace', ns, '--wait=false', '--ignore-not-found']);
    },
  };
}

/** Message of a Kubernetes `Status` body (what kubectl prints after "Error from server"). */
export function statusMessage(body: unknown): string {
  if (typeof body === 'object' && body !== null) {
    const m: unknown = Reflect.get(body, 'message');
    if (typeof m === 'string') return m;
  }
  return typeof body === 'string' ? body : JSON.stringify(body);
}

export function numberAt(obj: unknown, ...path: string[]): number {
  let cur: unknown = obj;
  for (const k of path) {
    if (typeof cur !== 'object' || cur === null) throw new Error(`no ${path.join('.')}`);
    cur = Reflect.get(cur, k);
  }
  if (typeof cur !== 'number') throw new Error(`${path.join('.')} is not a number`);
  return cur;
}
