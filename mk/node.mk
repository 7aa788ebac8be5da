# The rig's real node (docs/rig.md, "A real node"): kubelet, kube-controller-manager, kube-scheduler
# and a static pause built from the control plane's wrapper module into $(CANNES_CACHE)/node-<version>
# (test/controlplane/build-node.sh, cached by the hash of its inputs), Debian's containerd 1.6 and runc,
# the CNI plugins. `make cluster-e2e` installs the chart on it (tools/cluster-e2e.sh, in a sandbox of
# its own network and mount namespaces); `make test` runs it after the other tests.
APT_PACKAGES += containerd containernetworking-plugins runc nftables iproute2 util-linux buildah podman

.PHONY: node cluster-e2e

node: apt ## build the rig node's kubelet, controller manager, scheduler and pause image (cached)
	@command -v go >/dev/null || { echo "node: Go is required (https://go.dev/dl)"; exit 1; }
	@test/controlplane/build-node.sh >/dev/null

TEST_PREREQS += node

cluster-e2e: deps apt build $(filter-out hcloud-cli,$(TEST_PREREQS)) ## the chart with helm install --wait on the rig's real node
	@tools/cluster-e2e.sh
