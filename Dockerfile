# syntax=docker/dockerfile:1
# Build stage: compile the operator and bundle the proxy (the operator ships the bundle
# to each VPS over SSH, so it is part of the image). dist/ is plain JavaScript, the same for
# every platform, so a multi-arch build runs this stage once, natively, on the builder's platform.
FROM --platform=$BUILDPLATFORM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY common ./common
COPY operator ./operator
COPY proxy ./proxy
COPY tools/bundle-proxy.ts ./tools/bundle-proxy.ts
RUN npx tsc -p tsconfig.build.json && node tools/bundle-proxy.ts

# Production dependencies only, without install scripts (no native build, so no compilers). Type
# declarations and source maps are never read at run time: dropping them saves ~48 MB.
FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts \
 && find node_modules -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -delete

# Runtime: no sources, no dev dependencies, no shell tools we do not need; non-root.
FROM node:24-bookworm-slim
ENV NODE_ENV=production
# OPERATOR_RUNTIME_ENV (operator/config.ts): the memory docs/robustness.md measures.
ENV NODE_OPTIONS=--max-semi-space-size=8 MALLOC_CONF=background_thread:true,narenas:2 MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=131072
# jemalloc (Debian's libjemalloc2) allocates for Node: it hands a provisioning burst's freed
# pages back to the system, where glibc's heap kept them (IMAGE_JEMALLOC in operator/config.ts).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libjemalloc2 \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2" /usr/local/lib/libjemalloc.so.2 \
 && test -e /usr/local/lib/libjemalloc.so.2
ENV LD_PRELOAD=/usr/local/lib/libjemalloc.so.2
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["node", "dist/operator/main.js"]
CMD ["run"]
