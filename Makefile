# Cannes operator. Every tool the tests need is installed from here, idempotently, into a
# cache outside the work tree ($(CANNES_CACHE)) so a fresh clone on the same machine reuses it.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.SHELLFLAGS := -eu -o pipefail -c

export CANNES_CACHE ?= $(HOME)/.cache/cannes
NODE_BIN := $(shell tools/node.sh)
ifeq ($(NODE_BIN),)
$(error could not find or install Node >= 24.16; see tools/node.sh)
endif
export PATH := $(CURDIR)/node_modules/.bin:$(NODE_BIN):$(PATH)

# Pieces add themselves to these from mk/*.mk.
TEST_PREREQS :=
BENCH_TARGETS :=
APT_PACKAGES :=

include $(sort $(wildcard mk/*.mk))

.PHONY: help deps build crds lint typecheck test test-unit bench dev apt clean

help: ## this list
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

deps: node_modules/.stamp ## install npm dependencies (pinned Node first when the system one is too old)

# Debian packages the tests need (openssh-server, pgbouncer, prometheus, nginx, ...), listed by mk/*.mk.
apt: ## install the Debian packages the rig needs (idempotent)
	@missing=""; for p in $(sort $(APT_PACKAGES)); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

build: deps ## install dependencies and build dist/ (operator and the proxy bundle)
	tsc -p tsconfig.build.json
	node tools/bundle-proxy.ts

crds: deps ## regenerate crds/ and the chart's copy from operator/api
	node tools/gen-crds.ts

lint: deps ## biome (lint + format check)
	biome check .

typecheck: deps ## tsc over sources, tests and tools
	tsc -p tsconfig.json --noEmit

test: deps apt build lint typecheck $(TEST_PREREQS) ## install what is needed and run every test
	vitest run
	tools/cluster-e2e.sh

test-unit: deps build ## unit tests only (fast)
	vitest run --project unit

bench: deps apt build $(BENCH_TARGETS) ## benchmarks; ratios printed and written to bench/results/
	@mkdir -p bench/results
	@for b in bench/*.bench.ts; do [ -e "$$b" ] || continue; echo "== $$b"; node "$$b"; done

# make dev needs the rig's parts, not what only tests use (the images, the hcloud CLI, the real node).
DEV_PREREQS = $(filter-out image image-template-change hcloud-cli node,$(TEST_PREREQS))

dev: deps apt build $(DEV_PREREQS) ## the main job on the embedded default (rig, operator, examples, a Vps to Ready)
	node tools/dev.ts

clean: ## remove build outputs (the tool cache in $(CANNES_CACHE) is kept)
	rm -rf dist .rig
