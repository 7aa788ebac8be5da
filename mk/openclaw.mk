# The real OpenClaw gateway, from its npm package, for the gateway-config validation test and the
# gateway integration/e2e tests. Installed into the cache (NOT a project dependency: it is large,
# it is what runs inside the VPS container, and the operator never imports it).
OPENCLAW_VERSION ?= 2026.9.6
export OPENCLAW_DIR := $(CANNES_CACHE)/openclaw-$(OPENCLAW_VERSION)
OPENCLAW_STAMP := $(OPENCLAW_DIR)/.stamp

$(OPENCLAW_STAMP):
	@mkdir -p $(CANNES_CACHE)
	@echo "openclaw: installing openclaw@$(OPENCLAW_VERSION) into $(OPENCLAW_DIR)"
	@rm -rf $(OPENCLAW_DIR).tmp && mkdir -p $(OPENCLAW_DIR).tmp
	npm install --prefix $(OPENCLAW_DIR).tmp --no-audit --no-fund --loglevel=error --no-save openclaw@$(OPENCLAW_VERSION)
	node $(OPENCLAW_DIR).tmp/node_modules/openclaw/openclaw.mjs --version
	@rm -rf $(OPENCLAW_DIR) && mv $(OPENCLAW_DIR).tmp $(OPENCLAW_DIR)
	@touch $@

.PHONY: openclaw
openclaw: $(OPENCLAW_STAMP) ## install the pinned OpenClaw gateway (npm package) into the cache

TEST_PREREQS += openclaw

# nftables: test/integration/host loads the generated host firewall in network namespaces.
# openssh-server: `sshd -t/-T` checks the sshd hardening snippet.
APT_PACKAGES += nftables openssh-server iproute2
