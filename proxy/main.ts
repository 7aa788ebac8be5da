// Entry point of the host-side LLM proxy (bundled to dist/proxy/cannes-proxy.mjs).
const USAGE = `cannes-proxy: the host-side LLM proxy that injects real API keys for Docker bridge clients

usage: node cannes-proxy.mjs --keys FILE [--listen HOST:PORT ...] [--allow CIDR ...] [--metrics HOST:PORT]
`;

if (process.argv.includes('--help') || process.argv.includes('-h')) {
  process.stdout.write(USAGE);
  process.exit(0);
}
process.stderr.write('cannes-proxy: not implemented yet\n');
process.exit(2);
