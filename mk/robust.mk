# Robustness (crash at every step, faults, replicas: docs/robustness.md) and the operator
# benchmark. The benchmark runs the whole system (rig, simulator with real hosts, OpenClaw).
BENCH_TARGETS += controlplane openclaw
# The rig's operator allocates with jemalloc, as the image's does (test/lib/system.ts, hostJemalloc).
APT_PACKAGES += libjemalloc2

.PHONY: bench-operator
bench-operator: deps apt build controlplane openclaw ## the operator benchmark alone (writes bench/results/operator.json)
	@mkdir -p bench/results
	node bench/operator.bench.ts
