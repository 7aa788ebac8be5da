import type { BootMode, HostProvider, HostSpec } from '../hcloud-sim/host-provider.ts';
import { GATEWAY_IPV4, RealHostProvider } from './real-host-provider.ts';

/**
 * `make sim`'s hook (tools/sim.ts): as root, every simulated server is a real host
 * (RealHostProvider) and each lifecycle step prints how to reach it. Not root, or
 * CANNES_SIM_HOSTS=state: undefined, so the simulator keeps its state-only provider.
 *
 * It prints the rescue root password on purpose (the issue asks for it): it is the
 * simulator's throwaway credential for a host that exists only on this machine, and Hetzner
 * itself shows it once in the API answer.
 */
export function simHostProvider(print: (line: string) => void): HostProvider | undefined {
  if (process.getuid?.() !== 0 || process.env['CANNES_SIM_HOSTS'] === 'state') return undefined;
  const real = new RealHostProvider({ log: print });
  print(
    `servers: real hosts (network namespaces on this machine; gateway ${GATEWAY_IPV4}); files under ${real.baseDir}`,
  );
  return new AnnouncingProvider(real, print);
}

class AnnouncingProvider implements HostProvider {
  readonly #real: RealHostProvider;
  readonly #print: (line: string) => void;
  constructor(real: RealHostProvider, print: (line: string) => void) {
    this.#real = real;
    this.#print = print;
  }

  async create(spec: HostSpec): Promise<void> {
    await this.#real.create(spec);
    const info = this.#real.info(spec.serverId);
    this.#print(
      `server ${spec.serverId} (${spec.name}): IPv4 ${spec.ipv4}, netns ${info?.netns ?? '?'}, powered off`,
    );
  }

  async boot(serverId: number, mode: BootMode): Promise<void> {
    await this.#real.boot(serverId, mode);
    const ip = this.#real.info(serverId)?.ipv4 ?? '?';
    // Rescue has a fresh host key every boot: nothing to pin, so the hint skips known_hosts.
    const ssh = `ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@${ip}`;
    if (mode.kind === 'rescue') {
      this.#print(
        `server ${serverId}: rescue system on ${ip}: ${ssh}   (root password: ${mode.rootPassword})`,
      );
    } else {
      this.#print(`server ${serverId}: OS up on ${ip}: ${ssh.replace('ssh ', 'ssh -i <root key> ')}`);
    }
  }

  async powerOff(serverId: number): Promise<void> {
    await this.#real.powerOff(serverId);
    this.#print(`server ${serverId}: powered off`);
  }

  async destroy(serverId: number): Promise<void> {
    await this.#real.destroy(serverId);
    this.#print(`server ${serverId}: deleted (namespaces, mounts, processes and files removed)`);
  }

  close(): Promise<void> {
    return this.#real.close();
  }
}
