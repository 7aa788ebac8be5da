# Releases: .github/workflows/release.yaml builds and signs the multi-arch image and the OCI chart on a
# tag (docs/releasing.md). Checked here with actionlint, built once from its Go module into the cache
# (tools/actionlint.sh); shellcheck (Debian) lets actionlint check the workflows' `run:` scripts too.
APT_PACKAGES += shellcheck

.PHONY: lint-workflows actionlint

actionlint: ## build actionlint from its Go module into the cache (once)
	@tools/actionlint.sh >/dev/null

TEST_PREREQS += actionlint

lint-workflows: apt ## check .github/workflows with actionlint (built from its Go module, cached)
	@"$$(tools/actionlint.sh)" -no-color .github/workflows/*.yaml && echo "lint-workflows: ok"
