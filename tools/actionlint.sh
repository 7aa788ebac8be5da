#!/usr/bin/env bash
# Prints the path of actionlint (the GitHub Actions workflow checker), built once from its Go module
# into the cache, outside every work tree, as the control plane's binaries are. Idempotent: a version
# pin names the folder; a finished build is reused.
set -euo pipefail
ACTIONLINT_VERSION="v1.7.12"
CACHE="${CANNES_CACHE:-$HOME/.cache/cannes}"
dest="$CACHE/actionlint-$ACTIONLINT_VERSION"
if [ ! -x "$dest/bin/actionlint" ]; then
	command -v go >/dev/null || { echo "actionlint: Go is required to build it (https://go.dev/dl)" >&2; exit 1; }
	mkdir -p "$dest"
	exec 9>"$dest/.lock"
	flock 9
	if [ ! -x "$dest/bin/actionlint" ]; then
		tmp="$(mktemp -d "$dest/bin.tmp.XXXXXX")"
		trap 'rm -rf "$tmp"' EXIT
		echo "actionlint: building $ACTIONLINT_VERSION from its Go module" >&2
		# `go install pkg@version` records the module version, which `actionlint -version` prints.
		(cd "$tmp" && CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags="-s -w" \
			"github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION")
		"$tmp/actionlint" -version >/dev/null
		rm -rf "${dest:?}/bin" && mv "$tmp" "$dest/bin"
		trap - EXIT
	fi
fi
echo "$dest/bin/actionlint"
