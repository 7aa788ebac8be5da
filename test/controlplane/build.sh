#!/usr/bin/env bash
# Builds the test rig's control plane (kube-apiserver, etcd, kubectl) from this wrapper module and helm
# from its own module, into "$CANNES_CACHE/controlplane-<k8s version>/bin", outside every work tree so
# fresh clones on this machine reuse it. Idempotent: a stamp holds a hash of every input (go.mod, go.sum,
# the mains, this script, the helm pin); the build runs again only when that hash changes.
#
# KUBEBUILDER_ASSETS (the envtest variable), when set, must hold prebuilt kube-apiserver and etcd (and may
# hold kubectl): those are used as they are and not built here. helm is always built into the cache.
#
# Usage: build.sh            build if needed, print the bin directory on the last line
#        build.sh --print    print the bin directory only (no build)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HELM_VERSION="v3.22.0"
# The Kubernetes minor of the client libraries helm $HELM_VERSION requires (its go.mod: k8s.io/client-go v0.37.0).
HELM_K8S_MINOR="37"
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$here/go.mod")"
[ -n "$K8S_VERSION" ] || { echo "build.sh: no k8s.io/kubernetes requirement in $here/go.mod" >&2; exit 1; }
CACHE="${CANNES_CACHE:-$HOME/.cache/cannes}"
prefix="$CACHE/controlplane-$K8S_VERSION"
bin="$prefix/bin"

if [ "${1:-}" = "--print" ]; then echo "$bin"; exit 0; fi

hash="$(cd "$here" && cat go.mod go.sum cmd/*/main.go build.sh | sha256sum | cut -c1-16)-helm-$HELM_VERSION"
mkdir -p "$prefix"

# Two clones running `make test` at once on this machine must not build into the same folder together.
exec 9>"$prefix/.lock"
flock 9

need=(kube-apiserver etcd kubectl)
if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
	for b in kube-apiserver etcd; do
		[ -x "$KUBEBUILDER_ASSETS/$b" ] || { echo "build.sh: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $b" >&2; exit 1; }
	done
	need=()
	[ -x "$KUBEBUILDER_ASSETS/kubectl" ] || need=(kubectl)
fi

have_all=1
for b in "${need[@]}" helm; do [ -x "$bin/$b" ] || have_all=0; done
if [ "$have_all" = 1 ] && [ "$(cat "$prefix/.stamp" 2>/dev/null || true)" = "$hash" ]; then
	echo "controlplane: up to date in $bin (k8s $K8S_VERSION, helm $HELM_VERSION)" >&2
	echo "$bin"
	exit 0
fi

# Stale or partial: rebuild everything into a scratch folder, then swap it in, then stamp.
rm -f "$prefix/.stamp"
tmp="$prefix/bin.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
pkgs=()
for b in "${need[@]}"; do pkgs+=("./cmd/$b"); done
if [ "${#pkgs[@]}" -gt 0 ]; then
	echo "controlplane: building ${need[*]} from k8s.io/kubernetes $K8S_VERSION (slow the first time)" >&2
	# Upstream's build stamps the version with -X (hack/lib/version.sh); without it the server reports
	# v0.0.0-master and version checks (helm's kubeVersion, kubectl's skew warning) misfire.
	minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
	ld="-s -w"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
	done
	(cd "$here" && go build -ldflags="$ld" -o "$tmp/" "${pkgs[@]}")
fi
echo "controlplane: building helm $HELM_VERSION" >&2
# `go install pkg@version` ignores any enclosing module; helm's go.mod has no replace directives.
# Its Makefile stamps its own version and the Kubernetes minor its client libraries speak.
hld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
	hld="$hld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$HELM_K8S_MINOR"
done
(cd "$tmp" && GOBIN="$tmp" go install -ldflags="$hld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "$hash" >"$prefix/.stamp"
echo "controlplane: build took $(($(date +%s) - start)) s into $bin" >&2
echo "$bin"
