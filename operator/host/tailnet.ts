/**
 * The server's side of the owner's way in over Tailscale (issue 18): install the package, join
 * with an auth key that never touches a command line, put `tailscale serve` in front of the
 * gateway's loopback port. The scripts here run over the operator's SSH session
 * (operator/adapters/ssh.ts); their arguments are never secret, the key arrives on stdin.
 *
 * Verified against tailscale v1.102.5 in the rig (test/tailnet/README.md): `--auth-key=file:`
 * reads and trims the file; `up` on a joined node needs every non-default flag again, so a
 * joined node is left alone (`tailscale set --hostname` only); `serve` settings persist in
 * tailscaled's own state.
 */

/**
 * Tailscale's package signing key (rsa4096, 2020-02-25, "Tailscale Inc. (Package repository
 * signing key) <info@tailscale.com>"), as dnf shows it when importing pkgs.tailscale.com's key.
 * The install refuses a shipped key with another fingerprint.
 */
export const TAILSCALE_REPO_KEY_FINGERPRINT = '2596A99EAAB33821893C0A79458CA832957F5868';

/**
 * The armored public key of pkgs.tailscale.com, shipped with the operator so nothing is fetched
 * unauthenticated at deploy time. Empty: it could not be obtained where this was written (no
 * traffic leaves the build machine). Until it is filled in, a server gets tailscale from an
 * apt source its image already has (the install tries that first) or the step fails with
 * `TailscaleNotInstallable`. Fill it with `noble.asc` checked against the fingerprint above.
 */
export const TAILSCALE_REPO_KEY_ASC = '';

export const TAILSCALE_KEYRING = '/etc/apt/keyrings/tailscale-archive-keyring.asc';
export const TAILSCALE_SOURCES_LIST = '/etc/apt/sources.list.d/tailscale.list';

/** Ubuntu 24.04 (noble): Hetzner's docker-ce image. */
export function tailscaleSourcesList(codename = 'noble'): string {
  return `# Written by the Cannes operator: Tailscale's package repository, key shipped with the operator.
deb [signed-by=${TAILSCALE_KEYRING}] https://pkgs.tailscale.com/stable/ubuntu ${codename} main
`;
}

/** Exit codes of TAILNET_JOIN that the operator turns into conditions. */
export const JOIN_EXIT = { notInstallable: 4, keyRequired: 5, joinRefused: 6 } as const;

/**
 * Installs tailscale when missing, starts tailscaled, joins when the node is not joined yet,
 * and prints `tailscale status --json`. Arguments: login server, hostname, tags (comma
 * separated), 1 when the auth key follows on stdin. The key goes into a file in a fresh 0700
 * folder under /root (mktemp: 0600) that the trap removes whatever happens.
 */
export const TAILNET_JOIN = `
login=$1 host=$2 tags=$3 havekey=$4
export DEBIAN_FRONTEND=noninteractive
if ! { command -v tailscale >/dev/null 2>&1 && tailscale version >/dev/null 2>&1; }; then
  # A source the image already has first (custom images, the rig), then Tailscale's repository.
  if ! apt-get install -y -qq tailscale >/dev/null 2>&1; then
    if [ ! -s ${TAILSCALE_KEYRING} ] || [ ! -s ${TAILSCALE_SOURCES_LIST} ]; then
      echo "tailscale is not installed and no apt source offers it (the operator ships no repository key)" >&2
      exit ${JOIN_EXIT.notInstallable}
    fi
    if command -v gpg >/dev/null 2>&1; then
      fpr=$(gpg --show-keys --with-colons ${TAILSCALE_KEYRING} 2>/dev/null | awk -F: '$1 == "fpr" { print $10; exit }')
      [ "$fpr" = ${TAILSCALE_REPO_KEY_FINGERPRINT} ] || { echo "the Tailscale repository key has fingerprint $fpr" >&2; exit ${JOIN_EXIT.notInstallable}; }
    fi
    apt-get update -qq >/dev/null
    apt-get install -y -qq tailscale >/dev/null || exit ${JOIN_EXIT.notInstallable}
  fi
fi
systemctl enable tailscaled >/dev/null 2>&1 || true
systemctl start tailscaled
state=
for _ in $(seq 150); do
  state=$(tailscale status --json 2>/dev/null | grep -o '"BackendState": *"[A-Za-z]*"' | sed 's/.*"\\([A-Za-z]*\\)"$/\\1/' || true)
  [ -n "$state" ] && [ "$state" != NoState ] && break
  sleep 0.2
done
if [ "$state" != Running ]; then
  [ "$havekey" = 1 ] || { echo "the node is not joined ($state) and no auth key is at hand" >&2; exit ${JOIN_EXIT.keyRequired}; }
  d=$(mktemp -d /root/.cannes-tailnet.XXXXXXXX)
  trap 'rm -rf -- "$d"' EXIT
  (umask 077; cat >"$d/key")
  rc=0
  tailscale up --login-server="$login" --auth-key="file:$d/key" --hostname="$host" \\
    --advertise-tags="$tags" --accept-dns=false --timeout=60s >/dev/null || rc=$?
  rm -rf -- "$d"
  trap - EXIT
  if [ "$rc" != 0 ]; then
    # A refused key would otherwise be retried by tailscaled in the background.
    tailscale logout >/dev/null 2>&1 || tailscale down >/dev/null 2>&1 || true
    exit ${JOIN_EXIT.joinRefused}
  fi
else
  tailscale set --hostname="$host" >/dev/null
fi
tailscale status --json
`;

/** Serve in front of the gateway: arguments port, 1 for HTTPS on 443 (else HTTP on 80). */
export const TAILNET_SERVE = `
port=$1 https=$2
if [ "$https" = 1 ]; then
  tailscale serve --bg --yes --https=443 "http://127.0.0.1:$port" >/dev/null
else
  tailscale serve --bg --yes --http=80 "http://127.0.0.1:$port" >/dev/null
fi
`;

/**
 * The gateway answers at its tailnet URL, asked from the server itself through Serve (its own
 * tailnet address, the name Serve routes by). Arguments: URL, host name, port, tailnet IP.
 */
export const TAILNET_CHECK = `
url=$1 host=$2 port=$3 ip=$4
for _ in $(seq 30); do
  if curl -fsS -o /dev/null --max-time 5 --resolve "$host:$port:$ip" "\${url}healthz"; then exit 0; fi
  sleep 1
done
echo "the gateway does not answer at $url" >&2
exit 1
`;

export interface TailnetState {
  readonly backendState: string;
  /** `<hostname>.<tailnet>` without the trailing dot. */
  readonly dnsName: string;
  readonly ipv4: string | undefined;
  /** The tailnet offers HTTPS certificates (Tailscale with HTTPS enabled; not the rig). */
  readonly httpsAvailable: boolean;
}

/** The parts of `tailscale status --json` the operator uses (nothing of it leaves the operator). */
export function parseTailnetStatus(json: string): TailnetState {
  const s = JSON.parse(json) as {
    BackendState?: string;
    Self?: { DNSName?: string; TailscaleIPs?: string[] };
    CertDomains?: string[] | null;
  };
  const dnsName = String(s.Self?.DNSName ?? '').replace(/\.$/, '');
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/i.test(dnsName)) throw new Error('no DNS name in tailscale status');
  return {
    backendState: String(s.BackendState ?? ''),
    dnsName,
    ipv4: (s.Self?.TailscaleIPs ?? []).find((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a)),
    httpsAvailable: Array.isArray(s.CertDomains) && s.CertDomains.length > 0,
  };
}

/** Removes anything that looks like a Tailscale key from text meant for a condition. */
export function redactTailnetKeys(text: string): string {
  return text.replace(/tskey-[A-Za-z0-9_-]+/g, 'tskey-[redacted]');
}

/** The gateway's URL on the tailnet: what Serve answers on. */
export function tailnetGatewayUrl(dnsName: string, https: boolean): string {
  return `${https ? 'https' : 'http'}://${dnsName}/`;
}
