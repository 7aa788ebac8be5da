# The test rig's control plane: kube-apiserver, etcd and kubectl built from a wrapper Go module
# (test/controlplane, pinned k8s.io/kubernetes release) and helm from its own module, into
# $(CANNES_CACHE)/controlplane-<version>/bin. Idempotent: test/controlplane/build.sh rebuilds only when
# the hash of its inputs changes. KUBEBUILDER_ASSETS (prebuilt kube-apiserver/etcd[/kubectl]) skips that part.
.PHONY: controlplane cluster-up cluster-down

# openssl issues the rig's throwaway CA and certificates; setpriv (util-linux) ties the control plane's
# lifetime to its owner (PR_SET_PDEATHSIG).
APT_PACKAGES += openssl util-linux

controlplane: ## build kube-apiserver, etcd, kubectl and helm into the cache (once; slow when cold)
	@command -v go >/dev/null || { echo "controlplane: Go is required (https://go.dev/dl)"; exit 1; }
	@test/controlplane/build.sh >/dev/null

TEST_PREREQS += controlplane

cluster-up: deps controlplane ## start the rig's control plane alone (detached); kubeconfig at .rig/kubeconfig
	@node tools/cluster.ts up

cluster-down: ## stop the control plane started by cluster-up
	@node tools/cluster.ts down
