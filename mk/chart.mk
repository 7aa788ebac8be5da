# The Helm chart's tests: helm (built by mk/controlplane.mk into the cache), promtool and the
# prometheus server (Debian package `prometheus`: promtool checks and unit-tests the alert rules,
# the server scrapes during integration runs; its service is never started by the tests).
APT_PACKAGES += prometheus

.PHONY: chart-docs

chart-docs: deps ## regenerate the values table in charts/cannes-operator/README.md from values.yaml
	node tools/chart-docs.ts
