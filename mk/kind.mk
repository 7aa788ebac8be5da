# For users with Docker and kind (https://kind.sigs.k8s.io): the operator image and the chart
# on a kind cluster. These machines have no Docker engine, so this target cannot run here;
# docs/kind.md says what it does and what it does not prove.
KIND_CLUSTER ?= cannes
KIND_IMAGE ?= cannes-operator:dev

.PHONY: kind-e2e
kind-e2e: ## on a machine with Docker + kind: build the image, install CRDs and chart on kind, apply examples
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "kind-e2e needs a running Docker engine (none here; see docs/kind.md)"; exit 2; }
	@command -v kind >/dev/null || { echo "kind-e2e needs kind on PATH (see docs/kind.md)"; exit 2; }
	@[ -n "$${DATABASE_URL:-}" ] || { echo "kind-e2e needs DATABASE_URL (a Postgres the cluster can reach)"; exit 2; }
	docker build -t $(KIND_IMAGE) .
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --name $(KIND_CLUSTER)
	kind load docker-image $(KIND_IMAGE) --name $(KIND_CLUSTER)
	kubectl --context kind-$(KIND_CLUSTER) apply --server-side --force-conflicts -f crds/
	kubectl --context kind-$(KIND_CLUSTER) create namespace cannes-system --dry-run=client -o yaml | kubectl --context kind-$(KIND_CLUSTER) apply -f -
	kubectl --context kind-$(KIND_CLUSTER) -n cannes-system create secret generic cannes-database --from-literal=url="$$DATABASE_URL" --dry-run=client -o yaml | kubectl --context kind-$(KIND_CLUSTER) apply --server-side -f -
	printf 'k1 %s\n' "$$(openssl rand -base64 32)" | kubectl --context kind-$(KIND_CLUSTER) -n cannes-system create secret generic cannes-master-keys --from-file=master-keys=/dev/stdin --dry-run=client -o yaml | kubectl --context kind-$(KIND_CLUSTER) apply --server-side -f -
	helm --kube-context kind-$(KIND_CLUSTER) upgrade --install cannes charts/cannes-operator -n cannes-system \
	  --set image.repository=$(firstword $(subst :, ,$(KIND_IMAGE))) --set image.tag=$(lastword $(subst :, ,$(KIND_IMAGE))) --set image.pullPolicy=Never --wait
	kubectl --context kind-$(KIND_CLUSTER) -n cannes-system rollout status deploy -l app.kubernetes.io/name=cannes-operator
	@echo "operator running on kind-$(KIND_CLUSTER); apply examples/ (with real values) to provision a real Hetzner server"
