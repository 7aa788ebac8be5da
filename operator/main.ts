#!/usr/bin/env node
// cannes-operator: `run` (default) reconciles Vps and ModelKey resources; `rekey`
// re-encrypts every stored secret to the active master key.
import { rekeyCommand } from './cli/rekey.ts';
import { RUN_USAGE } from './config.ts';
import { runOperator } from './run.ts';

const USAGE = `cannes-operator: provisions OpenClaw gateways on Hetzner Cloud, keeping secrets where they belong

usage: node dist/operator/main.js [run|rekey|--help]

  run      reconcile Vps and ModelKey resources (default)
  rekey    re-encrypt every stored secret to the active (first) master key

environment:
  KUBECONFIG               kubeconfig path (in-cluster config when unset)
  DATABASE_URL             Postgres URL (Neon: sslmode=verify-full)
  CANNES_MASTER_KEYS_FILE  master keys, lines "kid base64-of-32-bytes"; the first encrypts
  HCLOUD_ENDPOINT          Hetzner Cloud API base URL (default https://api.hetzner.cloud/v1)
`;

const [command = 'run', ...rest] = process.argv.slice(2);

async function main(): Promise<number> {
  switch (command) {
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(USAGE);
      return 0;
    case 'run':
      if (rest.includes('--help')) {
        process.stdout.write(RUN_USAGE);
        return 0;
      }
      return runOperator(rest, process.env);
    case 'rekey':
      return rekeyCommand(rest, process.env);
    default:
      process.stderr.write(`cannes-operator: unknown command '${command}'\n\n${USAGE}`);
      return 2;
  }
}

process.exitCode = await main();
