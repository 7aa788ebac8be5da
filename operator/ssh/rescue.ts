import { CannesError, TerminalError } from '../../common/errors.ts';
import type { Secret } from '../../common/secret.ts';
import { type PublicKey, parsePrivateKey, parsePublicKey } from './keys.ts';
import type { SshSession } from './session.ts';
import { runScript, runScriptOk, shq } from './shell.ts';

export interface RescueKeygenResult {
  /** The new root key of the installed OS. Born in the rescue system; wiped there before we return. */
  readonly privateKey: Secret;
  readonly publicKey: PublicKey;
  /** The installed OS's ed25519 host key, read from its disk: pin it for every later session. */
  readonly osHostKey: PublicKey;
}

export interface RescueKeygenOptions {
  /** The OS root partition as the rescue system sees it (Hetzner cloud: /dev/sda1). */
  readonly osDevice?: string;
  /** Comment on the new public key. */
  readonly keyComment?: string;
}

const COMMENT = /^[A-Za-z0-9@._:-]{1,64}$/;
const DEVICE = /^\/dev\/[A-Za-z0-9/_-]{1,64}$/;

/**
 * docs/design.md §4 step 3 on an open rescue session (the one session without a pinned host key):
 * check it is the rescue system, make an ed25519 key there, mount the OS disk, install the
 * public key into the OS's /root/.ssh/authorized_keys (dir 700, file 600, owner root), read the
 * OS host key from the disk, read the private key back, and shred it. Idempotent: a re-run
 * after a crash makes a new key and appends it (the earlier one was never stored, and the
 * rotation later removes every key that is not active).
 */
export async function rescueKeygen(
  session: SshSession,
  options: RescueKeygenOptions = {},
): Promise<RescueKeygenResult> {
  const device = options.osDevice ?? '/dev/sda1';
  const comment = options.keyComment ?? 'cannes';
  if (!DEVICE.test(device)) throw new CannesError('InvalidArgument', 'bad OS device path');
  if (!COMMENT.test(comment)) throw new CannesError('InvalidArgument', 'bad key comment');

  // CAPH's check: we trust nothing read here unless this is the rescue system.
  const host = await runScriptOk(session, 'hostname', { what: 'hostname' });
  if (host.stdout.trim() !== 'rescue') {
    throw new TerminalError(
      'NotRescueSystem',
      `expected the rescue system, but hostname is ${JSON.stringify(host.stdout.trim().slice(0, 64))}`,
    );
  }

  // The key lives in a private tmp dir (umask 077) in rescue's RAM, never on the OS disk.
  const gen = await runScriptOk(
    session,
    `
umask 077
dev=$1 comment=$2
d=$(mktemp -d /tmp/cannes-keygen.XXXXXXXX)
ssh-keygen -q -t ed25519 -N '' -C "$comment" -f "$d/id" </dev/null >/dev/null
# Mount unless an earlier (crashed) run already did.
if ! { mountpoint -q /mnt && [ -d /mnt/root ] && [ -d /mnt/etc ]; }; then mount "$dev" /mnt; fi
[ -d /mnt/root ] && [ -d /mnt/etc ] || { echo "no installed OS on $dev" >&2; exit 4; }
install -d -m 700 -o root -g root /mnt/root/.ssh
ak=/mnt/root/.ssh/authorized_keys
pub=$(cut -d' ' -f1,2 "$d/id.pub")
# Rewritten with the new key alone (temp file + rename): a key of an earlier, crashed rescue
# run, or anything else that was there, can no longer log in as root.
install -m 600 -o root -g root /dev/null "$ak.cannes-new"
printf '%s %s\\n' "$pub" "$comment" >"$ak.cannes-new"
sync -- "$ak.cannes-new"
mv -f -- "$ak.cannes-new" "$ak"
# An image that never booted has no host keys yet (its first boot would make them): make the
# ed25519 one now, and tell cloud-init not to replace host keys at first boot, so the key we
# pin is the key the OS serves.
hk=/mnt/etc/ssh/ssh_host_ed25519_key
[ -s "$hk.pub" ] || ssh-keygen -q -t ed25519 -N '' -C root@os -f "$hk" </dev/null >/dev/null
if [ -d /mnt/etc/cloud/cloud.cfg.d ]; then
  printf 'ssh_deletekeys: false\n' >/mnt/etc/cloud/cloud.cfg.d/99-cannes-keep-host-keys.cfg
fi
echo "dir=$d"
echo "pub=$pub"
echo "hostkey=$(cat "$hk.pub")"
`,
    { args: [device, comment], what: 'rescue keygen' },
  );
  const fields = parseFields(gen.stdout, ['dir', 'pub', 'hostkey']);
  const dir = fields.get('dir') ?? '';
  if (!/^\/tmp\/cannes-keygen\.[A-Za-z0-9]{8}$/.test(dir))
    throw new CannesError('RemoteOutputInvalid', 'bad keygen dir');
  try {
    const publicKey = parsePublicKey(fields.get('pub') ?? '');
    const osHostKey = parsePublicKey(fields.get('hostkey') ?? '');
    if (osHostKey.type !== 'ssh-ed25519')
      throw new CannesError('SshKeyInvalid', 'OS host key is not ed25519');
    const raw = await session.execForSecret(`cat -- ${shq(`${dir}/id`)}`, { maxOutputBytes: 16 * 1024 });
    const { privateKey } = parsePrivateKey(raw, publicKey);
    return { privateKey, publicKey, osHostKey };
  } finally {
    await wipeDir(session, dir);
  }
}

/** shred every file in `dir`, remove it, and prove it is gone. */
export async function wipeDir(session: SshSession, dir: string): Promise<void> {
  const r = await runScript(
    session,
    `
d=$1
[ -e "$d" ] || exit 0
find "$d" -type f -exec shred -u -z -- {} +
rm -rf -- "$d"
[ ! -e "$d" ]
`,
    { args: [dir] },
  );
  if (r.exitCode !== 0)
    throw new CannesError('RemoteWipeFailed', `could not wipe ${dir}: ${r.stderr.trim().slice(-300)}`);
}

function parseFields(stdout: string, names: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out.set(line.slice(0, i), line.slice(i + 1));
  }
  for (const n of names) {
    if (!out.has(n)) throw new CannesError('RemoteOutputInvalid', `remote output lacks ${n}`);
  }
  return out;
}
