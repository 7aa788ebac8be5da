/**
 * `make sim`: the Hetzner Cloud API simulator alone, on 127.0.0.1:4000 (SIM_PORT overrides).
 * Prints the API token (64 characters, like a real one) so a person can point the hcloud
 * CLI or the operator at it: HCLOUD_ENDPOINT=http://127.0.0.1:4000/v1 HCLOUD_TOKEN=<token>.
 * The token is a throwaway made at start; the simulator only listens on loopback.
 */
import { startSimulator } from '../test/hcloud-sim/simulator.ts';
import { simHostProvider } from '../test/hosts/sim-hook.ts';

const port = Number(process.env['SIM_PORT'] ?? 4000);
const actionDurationMs = Number(process.env['SIM_ACTION_MS'] ?? 2000);
// --- test/hosts hook: as root, every server is a real host (CANNES_SIM_HOSTS=state opts out).
const provider = simHostProvider((line) => process.stdout.write(`${line}\n`));
// --- end hook
const sim = await startSimulator({
  ...(provider ? { provider } : {}),
  host: '127.0.0.1',
  port,
  actionDurationMs,
  ...(process.env['SIM_TOKEN'] ? { token: process.env['SIM_TOKEN'] } : {}),
});
process.stdout.write(
  `Hetzner Cloud simulator on ${sim.endpoint}\n` +
    `admin: ${sim.url}/__admin/{faults,requests,stats}\n` +
    `token: ${sim.token.reveal()}\n` +
    `  export HCLOUD_ENDPOINT=${sim.endpoint} HCLOUD_TOKEN=${sim.token.reveal()}\n`,
);
const stop = () => {
  void sim.close().then(() => process.exit(0));
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
