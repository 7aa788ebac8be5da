# The rig's tailnet: a control server on Tailscale's own test control server (testcontrol, with an
# in-process DERP relay and STUN server) and the real tailscaled/tailscale, all built from the
# tailscale.com Go module pinned in test/tailnet/go.mod into $(CANNES_CACHE)/tailnet-<inputs hash>/bin.
# Idempotent: test/tailnet/build.sh builds only when that folder is missing. docs/rig.md ("tailnet").
.PHONY: tailnet

# iproute2: namespaces and veths for the tailnet's nodes; util-linux: setpriv (pdeathsig).
APT_PACKAGES += iproute2 util-linux

tailnet: ## build the rig's tailnet control server, tailscaled and tailscale into the cache (once)
	@command -v go >/dev/null || { echo "tailnet: Go is required (https://go.dev/dl)"; exit 1; }
	@test/tailnet/build.sh >/dev/null

TEST_PREREQS += tailnet
