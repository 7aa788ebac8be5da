# Hetzner Cloud: the API simulator and the official hcloud CLI the integration test drives.
#
# The CLI is meant to be `go install github.com/hetznercloud/cli/cmd/hcloud@<pinned>`, but the
# Go module proxy reachable here refuses that module (403 "not available", for the version
# list and for v1.57.0). Debian ships the official CLI as `hcloud-cli`, so it comes from apt
# (pinned by the distribution: 1.30.3 on bookworm) and is linked into the cache under its
# version, where the test looks first (HCLOUD_CLI overrides).
APT_PACKAGES += hcloud-cli
HCLOUD_CLI_DIR = $(CANNES_CACHE)/hcloud-cli-deb

.PHONY: sim hcloud-cli
sim: deps ## the Hetzner Cloud API simulator alone on 127.0.0.1:4000 (prints its API token)
	node tools/sim.ts

hcloud-cli: apt ## the official hcloud CLI (Debian's hcloud-cli), linked into $(CANNES_CACHE)/hcloud-cli-deb
	@mkdir -p $(HCLOUD_CLI_DIR)
	@test -x /usr/bin/hcloud || { echo "hcloud-cli: /usr/bin/hcloud missing after apt"; exit 1; }
	@ln -sfn /usr/bin/hcloud $(HCLOUD_CLI_DIR)/hcloud
	@dpkg-query -W -f='hcloud-cli $${Version}\n' hcloud-cli

TEST_PREREQS += hcloud-cli
