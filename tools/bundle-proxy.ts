// Bundles the host-side proxy into ONE self-contained ESM file that runs with plain
// `node` on the VPS (no node_modules there).
import { build } from 'esbuild';

await build({
  entryPoints: ['proxy/main.ts'],
  outfile: 'dist/proxy/cannes-proxy.mjs',
  bundle: true,
  platform: 'node',
  target: 'node22',
  format: 'esm',
  minify: false,
  sourcemap: false,
  legalComments: 'none',
  // Some CommonJS dependencies call require() on node builtins; give ESM a require.
  banner: {
    js: "import { createRequire as __cannesCreateRequire } from 'node:module'; const require = __cannesCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
