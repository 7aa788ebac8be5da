# The secret store (operator/store): tests run on real Postgres (the local server, or a throwaway
# cluster from these binaries) and through a real PgBouncer in transaction mode with TLS (openssl CLI).
APT_PACKAGES += postgresql pgbouncer openssl

.PHONY: test-store bench-store
test-store: deps apt ## the store's unit and integration tests (real Postgres and PgBouncer)
	vitest run test/unit/store test/integration/store

bench-store: deps apt ## the store benchmark alone (writes bench/results/store.json)
	@mkdir -p bench/results
	node bench/store.bench.ts
