import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { describe, expect, it } from 'vitest';
import { startRig } from '../../rig/controlplane.ts';
import type { Rig } from '../../rig/rig.ts';
import { useRig } from '../../rig/shared.ts';
import { suffix, tempNamespace } from './fixtures.ts';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Pids of processes whose command line mentions `needle` (from /proc, no ps needed). */
function pidsMentioning(needle: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSyncSafe(`/proc/${d}/cmdline`).includes(needle);
      } catch {
        return false;
      }
    })
    .map(Number);
}

function readFileSyncSafe(path: string): string {
  return readFileSync(path, 'latin1').replaceAll('\0', ' ');
}

describe('the rig', () => {
  it('serves the pinned Kubernetes release over TLS to the admin client certificate', async () => {
    const rig: Rig = await useRig();
    const res = await rig.kubectl(['version', '-o', 'json']);
    expect(res.stdout).toMatch(/"serverVersion":\s*\{[^}]*"gitVersion":\s*"v1\.37\.2"/);
    expect(rig.server).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const who = await rig.kubectl(['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.groups}']);
    expect(who.stdout).toContain('system:masters');
  });

  it('has the default ServiceAccount in the default namespace, made without a controller-manager', async () => {
    const rig = await useRig();
    const res = await rig.kubectl(['get', 'serviceaccount', 'default', '-n', 'default', '-o', 'name']);
    expect(res.stdout.trim()).toBe('serviceaccount/default');
  });

  it('answers 401 to a client that trusts its CA but shows no credential', async () => {
    const rig = await useRig();
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(
        `${rig.server}/api/v1/namespaces`,
        { ca: readFileSync(rig.caCert), timeout: 10_000 },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(401);
  });

  it('hands out a TokenRequest kubeconfig that authenticates as the ServiceAccount', async () => {
    const rig = await useRig();
    const { ns, drop } = await tempNamespace(rig, 'rig');
    try {
      const sa = `who-${suffix()}`;
      const kubeconfig = await rig.serviceAccountKubeconfig(ns, sa);
      const who = await rig.kubectl(['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}'], {
        kubeconfig,
      });
      expect(who.stdout).toBe(`system:serviceaccount:${ns}:${sa}`);
    } finally {
      await drop();
    }
  });

  it('runs helm against the rig with its pinned version', async () => {
    const rig = await useRig();
    const version = await rig.helm(['version', '--short']);
    expect(version.stdout).toMatch(/^v3\.22\.0/);
    const list = await rig.helm(['list', '--all-namespaces', '-o', 'json']);
    expect(Array.isArray(JSON.parse(list.stdout))).toBe(true);
  });

  it('stop() kills etcd and kube-apiserver and removes the temp dir', async () => {
    const rig = await startRig();
    const pids = pidsMentioning(rig.dir);
    expect(pids.length).toBeGreaterThanOrEqual(2); // etcd and kube-apiserver run with paths inside dir
    expect(existsSync(rig.dir)).toBe(true);
    await rig.stop();
    expect(pids.filter(alive)).toEqual([]);
    expect(existsSync(rig.dir)).toBe(false);
  });
});
