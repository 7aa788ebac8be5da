// `helm test`: the operator answers and one replica leads. Run by the operator image's node
// (the image has no curl nor kubectl): GET /metrics through the metrics Service, then read the
// Lease with the test pod's own ServiceAccount (allowed to get that one Lease, nothing else).
// Prints one line per check; exit 1 on the first failure.
import { readFileSync } from 'node:fs';

const env = process.env;
const fail = (msg) => {
  console.error(`FAIL ${msg}`);
  process.exit(1);
};
const get = async (url, headers = {}) => {
  try {
    return await fetch(url, { headers, signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    return fail(`${url}: ${err?.cause?.code ?? err?.message ?? 'unreachable'}`);
  }
};

const metrics = await get(env.METRICS_URL);
if (metrics.status !== 200) fail(`${env.METRICS_URL}: HTTP ${metrics.status}`);
const text = await metrics.text();
if (!/^cannes_informer_synced\{/m.test(text)) fail(`${env.METRICS_URL}: no cannes_informer_synced series`);
console.log(`ok   the operator answers on ${env.METRICS_URL}`);

const host = env.KUBERNETES_SERVICE_HOST ?? '';
const api =
  env.API_URL ?? `https://${host.includes(':') ? `[${host}]` : host}:${env.KUBERNETES_SERVICE_PORT}`;
const tokenFile = env.TOKEN_FILE ?? '/var/run/secrets/kubernetes.io/serviceaccount/token';
const leaseUrl = `${api}/apis/coordination.k8s.io/v1/namespaces/${env.LEASE_NAMESPACE}/leases/${env.LEASE_NAME}`;
const res = await get(leaseUrl, { authorization: `Bearer ${readFileSync(tokenFile, 'utf8').trim()}` });
if (res.status === 404)
  fail(`Lease ${env.LEASE_NAMESPACE}/${env.LEASE_NAME} does not exist: no operator was ever elected`);
if (res.status !== 200) fail(`Lease ${env.LEASE_NAMESPACE}/${env.LEASE_NAME}: HTTP ${res.status}`);
const spec = (await res.json()).spec ?? {};
if (!spec.holderIdentity) fail(`Lease ${env.LEASE_NAME} has no holder: no leader`);
const renewed = Date.parse(spec.renewTime ?? '');
const validMs = (spec.leaseDurationSeconds ?? 15) * 1000;
// Some slack for clock skew between the API server and the leader's node.
if (!(Date.now() - renewed < validMs + 5_000))
  fail(`Lease ${env.LEASE_NAME} expired: the leader ${spec.holderIdentity} stopped renewing`);
console.log(`ok   ${spec.holderIdentity} leads (Lease ${env.LEASE_NAMESPACE}/${env.LEASE_NAME})`);
