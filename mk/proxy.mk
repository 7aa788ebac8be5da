# The host-side LLM proxy: bundle, tests, benchmark.
# iproute2: the proxy integration tests build real network namespaces and veth pairs.
# nginx, wrk: the benchmark compares the proxy with Debian's nginx, load from wrk (no service is started).
APT_PACKAGES += iproute2 nginx wrk

.PHONY: proxy proxy-test proxy-bench

proxy: deps ## bundle the proxy alone into dist/proxy/cannes-proxy.mjs
	node tools/bundle-proxy.ts

proxy-test: deps apt proxy ## the proxy's unit and integration tests
	vitest run test/unit/proxy test/integration/proxy

proxy-bench: deps apt proxy ## the proxy benchmark alone (direct vs proxy vs nginx)
	@mkdir -p bench/results
	node bench/proxy.bench.ts
