#!/usr/bin/env bash
# Builds the operator image from the Dockerfile, unchanged, with buildah (no Docker engine), into
# buildah's local storage (/var/lib/containers/storage, shared with podman). `make image` and
# test/integration/build/image.test.ts call this script.
#
# Cached by inputs: the image carries the label dev.cannes.image-inputs=<hash of the Dockerfile, every
# file its COPY lines name (package*.json, the sources dist/ is built from), .dockerignore, this script
# and the base image's id>; when an image under that name has that hash, nothing is built.
#
# Environment:
#   CANNES_IMAGE         name to tag (default: the chart's image.repository at package.json's version)
#   CANNES_IMAGE_CONTEXT the build context: a directory holding the Dockerfile and what it copies
#                        (default: this repository; tools/image-template-change.sh passes a changed copy)
#   CANNES_IMAGE_BASE    local (default): build the node:24-bookworm-slim stand-in (tools/image-base.sh)
#                        when the real one is absent; registry: let buildah pull the real base
#   BUILDAH_RUNTIME      OCI runtime (default runc when installed: crun 1.8 refuses this machine's
#                        hybrid cgroup v1 hierarchy, runc runs on it)
#   STORAGE_DRIVER       containers/storage driver (default: storage.conf's overlay; vfs when the kernel
#                        has no overlay filesystem)
#
# Usage: image.sh            build if needed; the image name is the last line on stdout
#        image.sh --print    print the image name only
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
context="${CANNES_IMAGE_CONTEXT:-$repo}"
CACHE="${CANNES_CACHE:-$HOME/.cache/cannes}"

version="$(node -p 'require("./package.json").version')"
repository="$(sed -nE 's/^  repository: ([^ ]+)$/\1/p' charts/cannes-operator/values.yaml | head -n1)"
IMAGE="${CANNES_IMAGE:-$repository:$version}"
if [ "${1:-}" = "--print" ]; then echo "$IMAGE"; exit 0; fi

for tool in buildah mmdebstrap; do
	command -v "$tool" >/dev/null || { echo "image: $tool is missing; run \`make apt\` (Debian package $tool)" >&2; exit 1; }
done
if [ -z "${BUILDAH_RUNTIME:-}" ] && command -v runc >/dev/null; then
	BUILDAH_RUNTIME="$(command -v runc)"
	export BUILDAH_RUNTIME
fi
if [ -z "${STORAGE_DRIVER:-}" ] && ! grep -qw overlay /proc/filesystems; then export STORAGE_DRIVER=vfs; fi

# One build at a time on this machine (make image and a test may race).
mkdir -p "$CACHE/image"
exec 9>"$CACHE/image/.lock"
flock 9

pull=never
if [ "${CANNES_IMAGE_BASE:-local}" = registry ]; then
	pull=true
else
	"$here/image-base.sh"
fi
cd "$context"
base_id="$(buildah inspect --type image --format '{{.FromImageID}}' docker.io/library/node:24-bookworm-slim 2>/dev/null || echo none)"

# The build context as the Dockerfile sees it: every local COPY source.
mapfile -t sources < <(grep -E '^COPY ' Dockerfile | grep -v -- '--from=' | awk '{ for (i = 2; i < NF; i++) print $i }')
inputs="$(
	{
		find Dockerfile .dockerignore "${sources[@]}" -type f -print0 | sort -z | xargs -0 sha256sum
		echo "script=$(sha256sum <"$here/image.sh" | cut -c1-64)"
		echo "base=$base_id pull=$pull"
	} | sha256sum | cut -c1-16
)"

have="$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "dev.cannes.image-inputs"}}' "$IMAGE" 2>/dev/null || true)"
if [ "$have" = "$inputs" ]; then
	echo "image: $IMAGE up to date (inputs $inputs)" >&2
	echo "$IMAGE"
	exit 0
fi

start=$(date +%s)
echo "image: building $IMAGE from the Dockerfile (inputs $inputs)" >&2
# Behind a TLS-inspecting proxy (this machine's egress) npm must trust the CA bundle the host's Node
# trusts (NODE_EXTRA_CA_CERTS, else npm's cafile), which the base image does not carry. It is mounted
# into each RUN step only, with a global npmrc naming it, so it stays out of every layer the final image
# keeps; without one nothing is mounted.
mounts=()
cafile="${NODE_EXTRA_CA_CERTS:-}"
[ -n "$cafile" ] || cafile="$(npm config get cafile 2>/dev/null || true)"
if [ -n "$cafile" ] && [ "$cafile" != null ] && [ "$cafile" != undefined ] && [ -f "$cafile" ]; then
	npmrc="$(mktemp)"
	chmod 644 "$npmrc"
	trap 'rm -f "$npmrc"' EXIT
	echo "cafile=/run/cannes-build/ca.crt" >"$npmrc"
	mounts=(-v "$cafile:/run/cannes-build/ca.crt:ro" -v "$npmrc:/usr/local/etc/npmrc:ro")
fi
# --network host: the build stage's `npm ci` reaches the npm registry as `make deps` does, without a
# CNI bridge and NAT rules. --layers: unchanged stages (npm ci of an unchanged lock file) are reused.
# --force-rm: a failed build leaves no working containers behind.
buildah bud --layers --force-rm --pull="$pull" --network host "${mounts[@]}" \
	--label "dev.cannes.image-inputs=$inputs" \
	--label "org.opencontainers.image.version=$version" \
	-t "$IMAGE" -f Dockerfile . >"$CACHE/image/build.log" 2>&1 || {
	tail -n 40 "$CACHE/image/build.log" >&2
	echo "image: buildah bud failed (whole log: $CACHE/image/build.log)" >&2
	exit 1
}
size="$(buildah images --format '{{.Size}}' "$IMAGE" 2>/dev/null | head -n1 || true)"
echo "image: built $IMAGE in $(($(date +%s) - start)) s${size:+, $size}" >&2
echo "$IMAGE"
