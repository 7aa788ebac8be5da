import { parseArgs } from 'node:util';
import { CannesError } from '../../common/errors.ts';
import { ANNOTATION_GATEWAY_URL, ANNOTATION_KEY_SET } from '../api/schema.ts';
import { ContentType, KubeClient } from '../kube/client.ts';
import { loadConnection } from '../kube/connection.ts';
import { isRecord } from '../kube/object.ts';

const HELP = `Usage: cannes-operator key set <namespace>/<modelkey> --from-stdin [--gateway-url URL]
       cannes-operator key delete <namespace>/<modelkey> [--gateway-url URL]

Hands the LLM key of a Direct ModelKey (spec.delivery: Direct) straight to its server over
your tailnet, as Cannes does from the browser: the key goes from this machine to the server's
key intake (tailscale serve, <gateway URL>/cannes-keys/), never through the Kubernetes API.
Run it on a machine of the tailnet whose login or tag is in the Vps's spec.tailnet.owners.

  --from-stdin        read the key from standard input (one line; a final newline is dropped)
  --gateway-url URL   the Vps's tailnet URL; default: its annotation ${ANNOTATION_GATEWAY_URL}

Kubernetes (KUBECONFIG) is used to find the URL and, after the server took the key, to
annotate the ModelKey (${ANNOTATION_KEY_SET}: a time, no secret) so the operator asks the server,
once, which routes hold a key. The key itself never goes there.

Exit status: 0 the server holds (or no longer holds) the key; 1 refused; 2 usage or setup error.
`;

/** A key a person pastes or pipes in: at most 4096 visible ASCII characters. */
const KEY_RE = /^[\x21-\x7e]{1,4096}$/;
const MAX_STDIN = 8192;

interface Target {
  readonly namespace: string;
  readonly name: string;
}

function target(raw: string | undefined): Target {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/.exec(raw ?? '');
  if (!m?.[1] || !m[3]) throw new CannesError('InvalidArgument', 'name the ModelKey as <namespace>/<name>');
  return { namespace: m[1], name: m[3] };
}

export interface KeyIo {
  readonly stdin: NodeJS.ReadableStream;
  readonly out: NodeJS.WritableStream;
  readonly err: NodeJS.WritableStream;
}

/** `cannes-operator key ...`: returns the exit status. Errors are one line that never holds the key. */
export async function keyCommand(
  argv: string[],
  io: KeyIo = { stdin: process.stdin, out: process.stdout, err: process.stderr },
): Promise<number> {
  try {
    return await keyCommandInner(argv, io);
  } catch (err) {
    if (!(err instanceof CannesError)) throw err;
    io.err.write(`cannes-operator key: ${err.message}\n`);
    return 2;
  }
}

async function keyCommandInner(argv: string[], io: KeyIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'from-stdin': { type: 'boolean' },
      'gateway-url': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [verb, ref] = positionals;
  if (values.help || (verb !== 'set' && verb !== 'delete')) {
    io.out.write(HELP);
    return values.help ? 0 : 2;
  }
  const t = target(ref);
  if (verb === 'set' && !values['from-stdin'])
    throw new CannesError(
      'InvalidArgument',
      'give the key on standard input with --from-stdin (never as an argument)',
    );
  let kube: Promise<KubeClient> | undefined;
  const kubeOnce = () => (kube ??= kubeClient());
  const url = values['gateway-url'] ?? (await gatewayUrlOf(await kubeOnce(), t));
  const key = verb === 'set' ? await readKey(io.stdin) : undefined;
  const r = await sendToIntake(url, t.name, key);
  if (!r.ok) {
    io.out.write(`key ${verb}: the server refused (${r.status} ${r.error}): ${r.message}\n`);
    return 1;
  }
  io.out.write(`the server ${r.hasKey ? 'holds a key' : 'holds no key'} for ${t.namespace}/${t.name}\n`);
  await (async () => annotate(await kubeOnce(), t))().catch((err: unknown) => {
    const why = err instanceof CannesError ? err.message : 'the API server did not answer';
    io.out.write(`note: could not annotate the ModelKey (${why}); its status updates at the next deploy\n`);
  });
  return 0;
}

async function kubeClient(): Promise<KubeClient> {
  return new KubeClient(await loadConnection(), { timeoutMs: 15_000 });
}

const mkPath = (t: Target) => `/apis/cannes.dev/v1alpha1/namespaces/${t.namespace}/modelkeys/${t.name}`;

async function gatewayUrlOf(kube: KubeClient, t: Target): Promise<string> {
  const mk = await kube.request('GET', mkPath(t));
  const spec = isRecord(mk) && isRecord(mk['spec']) ? mk['spec'] : {};
  if (spec['delivery'] !== 'Direct')
    throw new CannesError(
      'NotDirect',
      `ModelKey ${t.namespace}/${t.name} has delivery Secret: put its key into the Secret it names instead`,
    );
  const vpsName = isRecord(spec['vpsRef']) ? String(spec['vpsRef']['name']) : '';
  const vps = await kube.request(
    'GET',
    `/apis/cannes.dev/v1alpha1/namespaces/${t.namespace}/vpses/${vpsName}`,
  );
  const meta = isRecord(vps) && isRecord(vps['metadata']) ? vps['metadata'] : {};
  const url = isRecord(meta['annotations']) ? meta['annotations'][ANNOTATION_GATEWAY_URL] : undefined;
  if (typeof url !== 'string' || url === '')
    throw new CannesError(
      'NoGatewayUrl',
      `Vps ${t.namespace}/${vpsName} has no tailnet URL yet (annotation ${ANNOTATION_GATEWAY_URL}): it needs spec.tailnet and a join`,
    );
  return url;
}

async function readKey(stdin: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of stdin) {
    const b = typeof c === 'string' ? Buffer.from(c) : (c as Buffer);
    size += b.length;
    if (size > MAX_STDIN)
      throw new CannesError('KeyTooLarge', `the key on standard input is over ${MAX_STDIN} bytes`);
    chunks.push(b);
  }
  const key = Buffer.concat(chunks)
    .toString('latin1')
    .replace(/\r?\n$/, '');
  // Never quote it: it is the secret.
  if (!KEY_RE.test(key))
    throw new CannesError(
      'KeyMalformed',
      'the key on standard input must be one line of 1 to 4096 visible ASCII characters (no spaces)',
    );
  return key;
}

async function sendToIntake(
  gatewayUrl: string,
  name: string,
  key: string | undefined,
): Promise<{ ok: true; hasKey: boolean } | { ok: false; status: number; error: string; message: string }> {
  const base = new URL(gatewayUrl);
  const url = new URL(
    `cannes-keys/keys/${encodeURIComponent(name)}`,
    base.href.endsWith('/') ? base : `${base.href}/`,
  );
  let res: Response;
  try {
    res = await fetch(url, {
      method: key === undefined ? 'DELETE' : 'PUT',
      headers: { 'content-type': 'text/plain', 'cannes-intake': '1' },
      ...(key === undefined ? {} : { body: key }),
      redirect: 'error',
      signal: AbortSignal.timeout(60_000),
    });
  } catch (err) {
    const code =
      err instanceof Error && 'cause' in err && isRecord(err.cause) ? String(err.cause['code'] ?? '') : '';
    throw new CannesError(
      'IntakeUnreachable',
      `cannot reach ${url.origin} over the tailnet${code ? ` (${code})` : ''}`,
    );
  }
  const body: unknown = await res.json().catch(() => ({}));
  const r = isRecord(body) ? body : {};
  if (res.ok) return { ok: true, hasKey: r['hasKey'] === true };
  return {
    ok: false,
    status: res.status,
    error: typeof r['error'] === 'string' ? r['error'] : 'Refused',
    message: typeof r['message'] === 'string' ? r['message'] : res.statusText,
  };
}

async function annotate(kube: KubeClient, t: Target): Promise<void> {
  await kube.request('PATCH', mkPath(t), {
    body: { metadata: { annotations: { [ANNOTATION_KEY_SET]: new Date().toISOString() } } },
    contentType: ContentType.mergePatch,
  });
}
