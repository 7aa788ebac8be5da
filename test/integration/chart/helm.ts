/**
 * Rendering the chart with the rig's helm binary (built by `make controlplane`), and reading
 * what it renders. Used by the chart's tests and by later end-to-end tests that need the chart's
 * exact RBAC.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { controlPlaneBinaries } from '../../rig/binaries.ts';

export const CHART_DIR = 'charts/cannes-operator';
/** `helm template` has no API server to ask; this is the rig's Kubernetes version. */
export const KUBE_VERSION = '1.37.2';

/** Every optional part switched on, with leader election (two replicas). */
export const ALL_TOGGLES = {
  replicaCount: 2,
  serviceMonitor: { enabled: true, labels: { release: 'kube-prometheus-stack' } },
  prometheusRule: { enabled: true, labels: { release: 'kube-prometheus-stack' } },
  grafanaDashboard: { enabled: true },
  networkPolicy: {
    enabled: true,
    metricsFrom: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }],
  },
  hcloud: { endpoint: 'http://127.0.0.1:4000/v1' },
} as const;

export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [k: string]: unknown;
};

export type HelmResult = { code: number; stdout: string; stderr: string };

let scratch: string | undefined;
/** One private temp dir per process (helm home, values files), removed when the process exits. */
function scratchDir(): string {
  if (scratch === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'cannes-chart-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    scratch = dir;
  }
  return scratch;
}

function helmEnv(): NodeJS.ProcessEnv {
  // A private helm home: no user repositories, plugins or kubeconfig leak in.
  const home = join(scratchDir(), 'helm');
  return {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    HOME: home,
    HELM_CACHE_HOME: join(home, 'cache'),
    HELM_CONFIG_HOME: join(home, 'config'),
    HELM_DATA_HOME: join(home, 'data'),
    KUBECONFIG: join(home, 'no-kubeconfig'),
  };
}

export function helmBinary(): string {
  return process.env['CANNES_HELM'] ?? controlPlaneBinaries().helm;
}

/** Runs helm (not against any cluster); never throws on a non-zero exit. */
export function helm(args: string[]): Promise<HelmResult> {
  return new Promise((resolve, reject) => {
    execFile(
      helmBinary(),
      args,
      { env: helmEnv(), encoding: 'utf8', maxBuffer: 32 * 1024 * 1024, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code: unknown = err ? Reflect.get(err, 'code') : 0;
        if (typeof code !== 'number') reject(new Error(`helm failed to run: ${err?.message}`));
        else resolve({ code, stdout, stderr });
      },
    );
  });
}

let valuesCount = 0;
/** Writes values to a temp file for `--values` (removed when the process exits). */
export function valuesFile(values: unknown): string {
  const path = join(scratchDir(), `values-${++valuesCount}.json`);
  writeFileSync(path, JSON.stringify(values));
  return path;
}

export type RenderOptions = { release?: string; namespace?: string; values?: unknown };

function isObject(v: unknown): v is K8sObject {
  if (typeof v !== 'object' || v === null) return false;
  const meta: unknown = Reflect.get(v, 'metadata');
  return (
    typeof Reflect.get(v, 'kind') === 'string' &&
    typeof Reflect.get(v, 'apiVersion') === 'string' &&
    typeof meta === 'object' &&
    meta !== null &&
    typeof Reflect.get(meta, 'name') === 'string'
  );
}

/** Parses a multi-document YAML stream of Kubernetes objects. */
export function parseObjects(text: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`rendered YAML: ${doc.errors[0]?.message}`);
    const v: unknown = doc.toJS();
    if (v === null || v === undefined) continue;
    if (!isObject(v))
      throw new Error(`rendered YAML: not a Kubernetes object: ${JSON.stringify(v).slice(0, 200)}`);
    out.push(v);
  }
  return out;
}

/** `helm template` text; throws with helm's message when rendering fails. */
export async function renderText(opts: RenderOptions = {}): Promise<string> {
  const args = [
    'template',
    opts.release ?? 'cannes-operator',
    CHART_DIR,
    '--namespace',
    opts.namespace ?? 'cannes-system',
    '--kube-version',
    KUBE_VERSION,
  ];
  if (opts.values !== undefined) args.push('--values', valuesFile(opts.values));
  const res = await helm(args);
  if (res.code !== 0) throw new Error(`helm template failed: ${res.stderr.trim()}`);
  return res.stdout;
}

export async function render(opts: RenderOptions = {}): Promise<K8sObject[]> {
  return parseObjects(await renderText(opts));
}

export function findObject(objects: K8sObject[], kind: string, nameSuffix = ''): K8sObject {
  const found = objects.filter((o) => o.kind === kind && o.metadata.name.endsWith(nameSuffix));
  if (found.length !== 1)
    throw new Error(`expected one ${kind}${nameSuffix ? ` *${nameSuffix}` : ''}, found ${found.length}`);
  return found[0]!;
}
