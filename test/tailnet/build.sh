#!/usr/bin/env bash
# Builds the rig's tailnet into "$CANNES_CACHE/tailnet-<inputs hash>/bin", outside every work tree
# so fresh clones on this machine reuse it:
#   tailnet-control  this module's control server (testcontrol + DERP + STUN + admin API)
#   tailscaled       tailscale.com/cmd/tailscaled at the version pinned in go.mod
#   tailscale        tailscale.com/cmd/tailscale, same version
# The folder name carries a hash of every input (go.mod, go.sum, the main, the overlay, this
# script), so a change of any of them builds into a new folder; an existing complete folder is
# used as it is. testcontrol gets one file added at build time (in a vendored copy; see
# overlay/testcontrol_cannes.go.in for why); no upstream file is changed.
#
# Usage: build.sh            build if needed, print the bin directory on the last line
#        build.sh --print    print the bin directory only (no build)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${CANNES_CACHE:-$HOME/.cache/cannes}"
TS_VERSION="$(awk '$1 == "tailscale.com" && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == "tailscale.com" { print $3; exit }' "$here/go.mod")"
[ -n "$TS_VERSION" ] || { echo "build.sh: no tailscale.com requirement in $here/go.mod" >&2; exit 1; }
hash="$(cd "$here" && cat go.mod go.sum cmd/*/main.go overlay/*.go.in build.sh | sha256sum | cut -c1-16)"
prefix="$CACHE/tailnet-$hash"
bin="$prefix/bin"

if [ "${1:-}" = "--print" ]; then echo "$bin"; exit 0; fi

mkdir -p "$prefix"
# Two clones running `make test` at once must not build into the same folder together.
exec 9>"$prefix/.lock"
flock 9

if [ -x "$bin/tailnet-control" ] && [ -x "$bin/tailscaled" ] && [ -x "$bin/tailscale" ]; then
	echo "tailnet: up to date in $bin (tailscale.com $TS_VERSION)" >&2
	echo "$bin"
	exit 0
fi

tmp="$prefix/bin.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
# testcontrol gets one added file. `go build -overlay` refuses files under GOMODCACHE, so the build
# runs on a vendored copy of the module's dependencies (a scratch folder, removed after) and the
# file is placed in the vendored testcontrol package.
src="$tmp/src"
mkdir -p "$src"
cp -r "$here/go.mod" "$here/go.sum" "$here/cmd" "$src/"
(cd "$src" && go mod vendor)
cp "$here/overlay/testcontrol_cannes.go.in" "$src/vendor/tailscale.com/tstest/integration/testcontrol/testcontrol_cannes.go"
echo "tailnet: building tailnet-control, tailscaled, tailscale from tailscale.com $TS_VERSION (slow the first time)" >&2
# Upstream's release build stamps the version with -X (build_dist.sh), so `tailscale version`
# names the release.
ld="-s -w -X tailscale.com/version.longStamp=${TS_VERSION#v} -X tailscale.com/version.shortStamp=${TS_VERSION#v}"
(cd "$src" && nice -n 10 go build -mod=vendor -p 1 -ldflags="$ld" -o "$tmp/" ./cmd/tailnet-control tailscale.com/cmd/tailscaled tailscale.com/cmd/tailscale)
rm -rf "$src"
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "tailnet: build took $(($(date +%s) - start)) s into $bin" >&2
echo "$bin"
