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
import { INTAKE_PATH, INTAKE_PORT, SERVE_NETWORK } from './layout.ts';

/**
 * Tailscale's package signing key (rsa4096, 2020-02-25, "Tailscale Inc. (Package repository
 * signing key) <info@tailscale.com>"), as dnf shows it when importing pkgs.tailscale.com's key.
 * The install refuses a shipped key with another fingerprint.
 */
export const TAILSCALE_REPO_KEY_FINGERPRINT = '2596A99EAAB33821893C0A79458CA832957F5868';

/**
 * The armored public key of pkgs.tailscale.com (the same key signs its Debian and Ubuntu
 * repositories), shipped with the operator so nothing is fetched unauthenticated at deploy
 * time. test/unit/host/tailnet-key.test.ts computes its OpenPGP v4 fingerprint from the packet
 * and checks it against the pinned fingerprint above; the install script checks it again with
 * gpg on the server before apt trusts it.
 */
export const TAILSCALE_REPO_KEY_ASC = `-----BEGIN PGP PUBLIC KEY BLOCK-----

mQINBF5UmbgBEADAA5mxC8EoWEf53RVdlhQJbNnQW7fctUA5yNcGUbGGGTk6XFqO
nlek0Us0FAl5KVBgcS0Bj+VSwKVI/wx91tnAWI36CHeMyPTawdT4FTcS2jZMHbcN
UMqM1mcGs3wEQmKz795lfy2cQdVktc886aAF8hy1GmZDSs2zcGMvq5KCNPuX3DD5
INPumZqRTjwSwlGptUZrJpKWH4KvuGr5PSy/NzC8uSCuhLbFJc1Q6dQGKlQxwh+q
AF4uQ1+bdy92GHiFsCMi7q43hiBg5J9r55M/skboXkNBlS6kFviP+PADHNZe5Vw0
0ERtD/HzYb3cH5YneZuYXvnJq2/XjaN6OwkQXuqQpusB5fhIyLXE5ZqNlwBzX71S
779tIyjShpPXf1HEVxNO8TdVncx/7Zx/FSdwUJm4PMYQmnwBIyKlYWlV2AGgfxFk
mt2VexyS5s4YA1POuyiwW0iH1Ppp9X14KtOfNimBa0yEzgW3CHTEg55MNZup6k2Q
mRGtRjeqM5cjrq/Ix15hISmgbZogPRkhz/tcalK38WWAR4h3N8eIoPasLr9i9OVe
8aqsyXefCrziaiJczA0kCqhoryUUtceMgvaHl+lIPwyW0XWwj+0q45qzjLvKet+V
Q8oKLT1nMr/whgeSJi99f/jE4sWIbHZ0wwR02ZCikKnS05arl3v+hiBKPQARAQAB
tERUYWlsc2NhbGUgSW5jLiAoUGFja2FnZSByZXBvc2l0b3J5IHNpZ25pbmcga2V5
KSA8aW5mb0B0YWlsc2NhbGUuY29tPokCTgQTAQgAOBYhBCWWqZ6qszghiTwKeUWM
qDKVf1hoBQJeVJm4AhsDBQsJCAcCBhUKCQgLAgQWAgMBAh4BAheAAAoJEEWMqDKV
f1hoWHEP/1DYd9WZrodyV5zy1izvj0FXtUReJi374gDn3cHrG6uYtXcE9HWZhxQD
6nDgYuey5sBhLvPQiE/sl5GYXNw/O95XVk8HS54BHCCYq1GeYkZaiCGLGFBA08JK
7PZItGsfdJHwHfhSMtGPS7Cpmylje9gh8ic56NAhC7c5tGTlD69Y8zGHjnRQC6Hg
wF34jdp8JTQpSctpmiOxOXN+eH8N59zb0k30CUym1Am438AR0PI6RBTnubBH+Xsc
eQhLJnmJ1bM6GP4agXw5T1G/qp95gjIddHXzOkEvrpVfJFCtp91VIlBwycspKYVp
1IKAdPM6CVf/YoDkawwm4y4OcmvNarA5dhWBG0Xqse4v1dlYbiHIFcDzXuMyrHYs
D2Wg8Hx8TD64uBHY0fp24nweCLnaZCckVUsnYjb0A494lgwveswbZeZ6JC5SbDKH
Tc2SE4jq+fsEEJsqsdHIC04d+pMXI95HinJHU1SLBTeKLvEF8Zuk7RTJyaUTjs7h
Ne+xWDmRjjR/D/GXBxNrM9mEq6Jvp/ilYTdWwAyrSmTdotHb+NWjAGpJWj5AZCH9
HeBr2mtVhvTu3KtCQmGpRiR18zMbmemRXUh+IX5hpWGzynhtnSt7vXOvhJdqqc1D
VennRMQZMb09wJjPcvLIApUMl69r29XmyB59NM3UggK/UCJrpYfmuQINBF5UmbgB
EADTSKKyeF3XWDxm3x67MOv1Zm3ocoe5xGDRApPkgqEMA+7/mjVlahNXqA8btmwM
z1BH5+trjOUoohFqhr9FPPLuKaS/pE7BBP38KzeA4KcTiEq5FQ4JzZAIRGyhsAr+
6bxcKV/tZirqOBQFC7bH2UAHH7uIKHDUbBIDFHjnmdIzJ5MBPMgqvSPZvcKWm40g
W+LWMGoSMH1Uxd+BvW74509eezL8p3ts42txVNvWMSKDkpiCRMBhfcf5c+YFXWbu
r5qus2mnVw0hIyYTUdRZIkOcYBalBjewVmGuSIISnUv76vHz133i0zh4JcXHUDqc
yLBUgVWckqci32ahy3jc4MdilPeAnjJQcpJVBtMUNTZ4KM7UxLmOa5hYwvooliFJ
wUFPB+1ZwN8d+Ly12gRKf8qA/iL8M5H4nQrML2dRJ8NKzP2U73Fw+n6S1ngrDX8k
TPhQBq4EDjDyX7SW3Liemj5BCuWJAo53/2cL9P9I5Nu3i2pLJOHzjBSXxWaMMmti
kopArlSMWMdsGgb0xYX+aSV7xW+tefYZJY1AFJ1x2ZgfIc+4zyuXnHYA2jVYLAfF
pApqwwn8JaTJWNhny/OtAss7XV/WuTEOMWXaTO9nyNmHla9KjxlBkDJG9sCcgYMg
aCAnoLRUABCWatxPly9ZlVbIPPzBAr8VN/TEUbceAH0nIwARAQABiQI2BBgBCAAg
FiEEJZapnqqzOCGJPAp5RYyoMpV/WGgFAl5UmbgCGwwACgkQRYyoMpV/WGji9w/8
Di9yLnnudvRnGLXGDDF2DbQUiwlNeJtHPHH4B9kKRKJDH1Rt5426Lw8vAumDpBlR
EeuT6/YQU+LSapWoDzNcmDLzoFP7RSQaB9aL/nJXv+VjlsVH/crpSTTgGDs8qGsL
O3Y2U1Gjo5uMBoOfXwS8o1VWO/5eUwS0KH7hpbOuZcf9U9l1VD2YpGfnMwX1rnre
INJqseQAUL3oyNl76gRzyuyQ4AIA06r40hZDgybH0ADN1JtfVk8z4ofo/GcfoXqm
hifWJa2SwwHeijhdN1T/kG0FZFHs1DBuBYJG3iJ3/bMeL15j1OjncIYIYccdoEUd
uHnp4+ZYj5kND0DFziTvOC4WyPpv3BlBVariPzEnEqnhjx5RYwMabtTXoYJwUkxX
2gAjKqh2tXissChdwDGRNASSDrChHLkQewx+SxT5kDaOhB84ZDnp+urn9A+clLkN
lZMsMQUObaRW68uybSbZSmIWFVM1GovRMgrPG3T6PAykQhFyE/kMFrv5KpPh7jDj
5JwzQkxLkFMcZDdS43VymKEggxqtM6scIRU55i059fLPAVXJG5in1WhMNsmt49lb
KqB6je3plIWOLSPuCJ/kR9xdFp7Qk88GCXEd0+4z/vFn4hoOr85NXFtxhS8k9GfJ
mM/ZfUq7YmHR+Rswe0zrrCwTDdePjGMo9cHpd39jCvc=
=AIVM
-----END PGP PUBLIC KEY BLOCK-----
`;

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
      echo "tailscale is not installed and its repository key or source list is missing" >&2
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

/**
 * Serve in front of the gateway: arguments port, 1 for HTTPS on 443 (else HTTP on 80). Serve
 * dials the container on its own network (SERVE_NETWORK), never the published loopback port,
 * so the gateway can tell Serve (its one trusted proxy) from the owner's SSH tunnel.
 */
export const TAILNET_SERVE = `
port=$1 https=$2
# The gateway at / on its own network, the key intake (loopback only) at ${INTAKE_PATH}/ of the same name.
if [ "$https" = 1 ]; then listen=--https=443; else listen=--http=80; fi
tailscale serve --bg --yes "$listen" "http://${SERVE_NETWORK.containerAddress}:$port" >/dev/null
tailscale serve --bg --yes "$listen" --set-path=${INTAKE_PATH} "http://127.0.0.1:${INTAKE_PORT}" >/dev/null
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
