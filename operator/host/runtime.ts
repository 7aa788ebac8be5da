/**
 * The Node runtime the proxy runs on. Hetzner's `docker-ce` image (Ubuntu 24.04 + Docker CE)
 * has no Node (docs/hosts.md), so the deploy installs a pinned Node 24 LTS before it starts the
 * proxy unit: the official tarball for the server's architecture, downloaded BY THE SERVER from
 * the base URL (default nodejs.org), checked against a pinned SHA-256 before anything is
 * unpacked, unpacked into a temp folder and renamed into a versioned folder. The rename is the
 * commit: the folder exists only complete and verified, so "installed" is one test and a
 * failed or cut-short try leaves nothing the next one depends on.
 *
 * docs/hosts.md ("The proxy's runtime") says why a tarball and not a single executable (SEA),
 * what a first install costs and what a Node security update costs.
 */

/** Node 24 LTS ("Krypton"). Bump with NODE_SHA256 (both from the release's SHASUMS256.txt). */
export const NODE_RUNTIME_VERSION = '24.21.0';

/** Hetzner's `server_type.architecture` → Node's name for the Linux build. */
export type HetznerArchitecture = 'x86' | 'arm';
export type NodeArch = 'x64' | 'arm64';

export const NODE_ARCH: Readonly<Record<HetznerArchitecture, NodeArch>> = { x86: 'x64', arm: 'arm64' };

/**
 * SHA-256 of the official `node-v24.21.0-linux-<arch>.tar.xz` (nodejs.org/dist/v24.21.0/
 * SHASUMS256.txt; the same values are quoted by several independent public projects that pin
 * this release). `--node-sha256` replaces the table (the test rig's mirror repacks the npm
 * registry's builds, so its tarballs have other bytes).
 */
export const NODE_SHA256: Readonly<Record<NodeArch, string>> = {
  x64: 'fd8e59d5a511510f6a298afb548f18c7d2b1be404d8b4a27d94fbe49f56cb2d6',
  arm64: '6ad1325edbdb5649c379b75a237147a666c95d4f9ae8d340fef2d1575d289ad2',
};

export const NODE_DIST_DEFAULT = 'https://nodejs.org/dist';

/** Where runtimes live on the server: one folder per version and architecture. */
export const RUNTIME_ROOT = '/opt/cannes';

/** ELF e_machine of each build (bytes 18-19, little endian): a tarball of the wrong machine is refused. */
const ELF_MACHINE: Readonly<Record<NodeArch, string>> = { x64: '3e00', arm64: 'b700' };

export interface NodeRuntime {
  readonly version: string;
  readonly arch: NodeArch;
  readonly sha256: string;
  /** Base of the download: `<baseUrl>/v<version>/node-v<version>-linux-<arch>.tar.xz`. */
  readonly baseUrl: string;
}

export function nodeRuntime(
  architecture: HetznerArchitecture,
  o: { readonly baseUrl?: string; readonly sha256?: Partial<Record<NodeArch, string>> } = {},
): NodeRuntime {
  const arch = NODE_ARCH[architecture];
  if (!arch) throw new Error(`no Node build for server architecture ${JSON.stringify(architecture)}`);
  const sha256 = o.sha256?.[arch] ?? NODE_SHA256[arch];
  return { version: NODE_RUNTIME_VERSION, arch, sha256, baseUrl: o.baseUrl ?? NODE_DIST_DEFAULT };
}

export const runtimeName = (r: Pick<NodeRuntime, 'version' | 'arch'>): string =>
  `node-v${r.version}-linux-${r.arch}`;

/** The installed folder, e.g. /opt/cannes/node-v24.21.0-linux-arm64. */
export const runtimeDir = (r: Pick<NodeRuntime, 'version' | 'arch'>): string =>
  `${RUNTIME_ROOT}/${runtimeName(r)}`;

/** The `node` the proxy unit runs. */
export const runtimeNode = (r: Pick<NodeRuntime, 'version' | 'arch'>): string => `${runtimeDir(r)}/bin/node`;

export const runtimeUrl = (r: NodeRuntime): string =>
  `${r.baseUrl.replace(/\/+$/, '')}/v${r.version}/${runtimeName(r)}.tar.xz`;

/** Marker inside an installed folder: the SHA-256 of the tarball it came from. */
export const RUNTIME_MARKER = '.cannes-sha256';

function check(r: NodeRuntime): void {
  if (!/^[0-9]+\.[0-9]+\.[0-9]+$/.test(r.version)) throw new Error('node runtime: bad version');
  if (!/^[0-9a-f]{64}$/.test(r.sha256))
    throw new Error('node runtime: SHA-256 must be 64 lowercase hex digits');
  // The URL lands in a shell script (single-quoted below) and in curl's argv: a plain URL only.
  if (!/^https?:\/\/[A-Za-z0-9.:[\]-]+(\/[A-Za-z0-9._~/-]*)?$/.test(r.baseUrl))
    throw new Error('node runtime: the base URL must be a plain http(s) URL');
}

/**
 * Bash (run as root, under the deploy lock) that makes sure the runtime is installed. Exits 0
 * at once, transferring nothing, when the folder is there with the marker of this SHA-256.
 * Otherwise: download to a temp folder beside the target (same file system, so the final
 * rename is atomic), verify the SHA-256 of the bytes received, only then unpack, check that the
 * tarball holds a `bin/node` for this machine, write the marker, rename into place. Every
 * failure exits non-zero with one line on stderr that says what went wrong, and removes the
 * temp folder (a killed try leaves one that the next try sweeps).
 */
export function runtimeInstallScript(r: NodeRuntime): string {
  check(r);
  const dir = runtimeDir(r);
  const name = runtimeName(r);
  const url = runtimeUrl(r);
  return `
dest='${dir}'
want='${r.sha256}'
if [ -x "$dest/bin/node" ] && [ "$(cat "$dest/${RUNTIME_MARKER}" 2>/dev/null)" = "$want" ]; then exit 0; fi
fail() { echo "Node ${r.version} (linux-${r.arch}): $*" >&2; exit 1; }
command -v curl >/dev/null 2>&1 || fail "curl is not installed on the server"
command -v xz >/dev/null 2>&1 || fail "xz is not installed on the server (tar needs it for .tar.xz)"
install -d -m 0755 '${RUNTIME_ROOT}'
# Leftovers of a try that was killed (the deploy lock makes this try the only one running).
rm -rf '${RUNTIME_ROOT}'/.node-install.*
tmp=$(mktemp -d '${RUNTIME_ROOT}/.node-install.XXXXXXXX')
trap 'rm -rf -- "$tmp"' EXIT
curl -fsS --retry 3 --connect-timeout 20 --max-time 900 -o "$tmp/node.tar.xz" '${url}' 2>"$tmp/curl.err" ||
  fail "download of ${url} failed: $(tail -c 300 "$tmp/curl.err")"
got=$(sha256sum "$tmp/node.tar.xz" | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "checksum mismatch for ${url}: expected SHA-256 $want, got $got; nothing was unpacked"
mkdir "$tmp/x"
tar -xJf "$tmp/node.tar.xz" -C "$tmp/x" --no-same-owner 2>"$tmp/tar.err" ||
  fail "the verified tarball does not unpack: $(tail -c 300 "$tmp/tar.err")"
[ -f "$tmp/x/${name}/bin/node" ] || fail "the tarball has no ${name}/bin/node"
machine=$(od -An -tx1 -j18 -N2 "$tmp/x/${name}/bin/node" | tr -d ' \\n')
[ "$machine" = '${ELF_MACHINE[r.arch]}' ] || fail "bin/node in the tarball is not a linux-${r.arch} executable"
chmod -R u+rwX,go+rX,go-w "$tmp/x/${name}"
printf '%s\\n' "$want" >"$tmp/x/${name}/${RUNTIME_MARKER}"
sync -f "$tmp/x/${name}/bin/node" 2>/dev/null || true
# A folder of this version without this marker (another pin): moved aside, removed with $tmp.
if [ -e "$dest" ]; then mv -- "$dest" "$tmp/old"; fi
mv -- "$tmp/x/${name}" "$dest"
sync -f '${RUNTIME_ROOT}' 2>/dev/null || true
echo "installed Node ${r.version} (linux-${r.arch}) into $dest" >&2
`;
}
