#!/usr/bin/env node
// cannes-operator: `run` (default) reconciles Vps and ModelKey resources; `rekey`
// re-encrypts every stored secret to the active master key; `recover` regains a server whose
// SSH key the store lost, through Hetzner's rescue system; `key` hands a Direct ModelKey's LLM
// key to its server over the tailnet.
import { keyCommand } from './cli/key.ts';
import { recoverCommand } from './cli/recover.ts';
import { rekeyCommand } from './cli/rekey.ts';
import { configErrorLine, ENVIRONMENT, RUN_USAGE } from './config.ts';
import { runOperator } from './run.ts';
import { OPERATOR_VERSION } from './version.ts';

const USAGE = `cannes-operator ${OPERATOR_VERSION}: provisions OpenClaw gateways on Hetzner Cloud, keeping secrets where they belong

usage: cannes-operator [run|rekey|recover|key] [flags]
       cannes-operator --version | --help

  run      reconcile Vps and ModelKey resources (default; flags: cannes-operator run --help)
  rekey    re-encrypt every stored secret to the active (first) master key (cannes-operator rekey --help)
  recover  <namespace>/<vps>: regain a server whose SSH key the store lost, through Hetzner's
           rescue system with a fresh token (cannes-operator recover --help)
  key      hand a Direct ModelKey's LLM key to its server over the tailnet (cannes-operator key --help)

${ENVIRONMENT}`;

const [command = 'run', ...rest] = process.argv.slice(2);

async function main(): Promise<number> {
  switch (command) {
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(USAGE);
      return 0;
    case '--version':
    case 'version':
      process.stdout.write(`cannes-operator ${OPERATOR_VERSION}\n`);
      return 0;
    case 'run':
      if (rest.includes('--help') || rest.includes('-h')) {
        process.stdout.write(RUN_USAGE);
        return 0;
      }
      if (rest.includes('--version')) {
        process.stdout.write(`cannes-operator ${OPERATOR_VERSION}\n`);
        return 0;
      }
      return runOperator(rest, process.env);
    case 'rekey':
      return rekeyCommand(rest, process.env);
    case 'recover':
      return recoverCommand(rest, process.env);
    case 'key':
      return keyCommand(rest);
    default:
      process.stderr.write(
        `cannes-operator: unknown command '${command.slice(0, 64)}' (see cannes-operator --help)\n`,
      );
      return 2;
  }
}

try {
  process.exitCode = await main();
} catch (err) {
  // A configuration error is one line naming the flag or variable; anything else that escapes
  // is named by its type only: its message could carry what a secret-bearing input said.
  const line = configErrorLine(err);
  process.stderr.write(
    `cannes-operator: ${line ?? `unexpected error (${err instanceof Error ? err.name : typeof err})`}\n`,
  );
  process.exitCode = line === undefined ? 1 : 2;
}
