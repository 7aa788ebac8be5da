#!/usr/bin/env bash
# Builds the rig's node from this wrapper module (the same k8s.io/kubernetes pin as the control plane):
# kubelet, kube-controller-manager, kube-scheduler and a static `pause` (the pod sandbox), into
# "$CANNES_CACHE/node-<k8s version>/bin", plus the pause image as an OCI archive (pause.oci.tar, made
# with buildah from scratch) that the node imports into its containerd. docs/rig.md, "A real node".
#
# Idempotent: a stamp holds a hash of go.mod, go.sum, the node's mains and this script; the build runs
# again only when that hash changes. A flock keeps two clones from building into the same folder at once.
#
# Usage: build-node.sh            build if needed, print the bin directory on the last line
#        build-node.sh --print    print the bin directory only (no build)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$here/go.mod")"
[ -n "$K8S_VERSION" ] || { echo "build-node.sh: no k8s.io/kubernetes requirement in $here/go.mod" >&2; exit 1; }
CACHE="${CANNES_CACHE:-$HOME/.cache/cannes}"
prefix="$CACHE/node-$K8S_VERSION"
bin="$prefix/bin"
# The name containerd's sandbox_image points at; never pulled (the node imports the archive).
PAUSE_IMAGE="localhost/cannes-pause:1"

if [ "${1:-}" = "--print" ]; then echo "$bin"; exit 0; fi

mains=(kubelet kube-controller-manager kube-scheduler pause)
hash="$(cd "$here" && cat go.mod go.sum build-node.sh $(printf 'cmd/%s/main.go ' "${mains[@]}") | sha256sum | cut -c1-16)"
mkdir -p "$prefix"
exec 9>"$prefix/.lock"
flock 9

have_all=1
for b in "${mains[@]}" pause.oci.tar; do [ -e "$bin/$b" ] || have_all=0; done
if [ "$have_all" = 1 ] && [ "$(cat "$prefix/.stamp" 2>/dev/null || true)" = "$hash" ]; then
	echo "node: up to date in $bin (k8s $K8S_VERSION)" >&2
	echo "$bin"
	exit 0
fi

command -v buildah >/dev/null || { echo "build-node.sh: buildah is missing; run \`make apt\`" >&2; exit 1; }
rm -f "$prefix/.stamp"
tmp="$prefix/bin.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
ctr=""
cleanup() { [ -z "$ctr" ] || buildah rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
start=$(date +%s)
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
echo "node: building ${mains[*]} from k8s.io/kubernetes $K8S_VERSION (slow the first time)" >&2
# The same version stamps as build.sh: the kubelet reports its version to the API server in Node.status.
minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
(cd "$here" && nice go build -ldflags="$ld" -o "$tmp/" $(printf './cmd/%s ' "${mains[@]}"))

# The pause image: the static binary alone in a scratch image, run as nobody.
BUILDAH_RUNTIME="${BUILDAH_RUNTIME:-$(command -v runc || true)}"
export BUILDAH_RUNTIME
ctr="$(buildah from scratch)"
buildah copy --chmod 0755 "$ctr" "$tmp/pause" /pause >/dev/null
buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
buildah commit --quiet --rm "$ctr" "$PAUSE_IMAGE" >/dev/null
ctr=""
buildah push --quiet "$PAUSE_IMAGE" "oci-archive:$tmp/pause.oci.tar:$PAUSE_IMAGE"
echo "$PAUSE_IMAGE" >"$tmp/pause.image"

rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "$hash" >"$prefix/.stamp"
echo "node: build took $(($(date +%s) - start)) s into $bin" >&2
echo "$bin"
