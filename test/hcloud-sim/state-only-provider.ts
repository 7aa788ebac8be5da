import type { BootMode, HostProvider, HostSpec } from './host-provider.ts';

export type HostState = 'off' | 'rescue' | 'os' | 'destroyed';

export interface HostCall {
  readonly op: 'create' | 'boot' | 'powerOff' | 'destroy';
  readonly serverId: number;
  /** For boot: the mode's kind (the rescue password is not kept here). */
  readonly mode?: BootMode['kind'];
}

/**
 * A HostProvider that only tracks state: which servers exist and what they last booted into.
 * The simulator's default; `test/hosts/` plugs real hosts in behind the same interface.
 */
export class StateOnlyProvider implements HostProvider {
  readonly calls: HostCall[] = [];
  readonly #hosts = new Map<number, { spec: HostSpec; state: HostState; boots: number }>();

  async create(spec: HostSpec): Promise<void> {
    this.calls.push({ op: 'create', serverId: spec.serverId });
    this.#hosts.set(spec.serverId, { spec, state: 'off', boots: 0 });
  }

  async boot(serverId: number, mode: BootMode): Promise<void> {
    this.calls.push({ op: 'boot', serverId, mode: mode.kind });
    const h = this.#need(serverId);
    h.state = mode.kind;
    h.boots++;
  }

  async powerOff(serverId: number): Promise<void> {
    this.calls.push({ op: 'powerOff', serverId });
    this.#need(serverId).state = 'off';
  }

  async destroy(serverId: number): Promise<void> {
    this.calls.push({ op: 'destroy', serverId });
    const h = this.#hosts.get(serverId);
    if (h) h.state = 'destroyed';
  }

  async close(): Promise<void> {
    for (const h of this.#hosts.values()) h.state = 'destroyed';
  }

  /** What the host runs now (undefined: never created). */
  state(serverId: number): HostState | undefined {
    return this.#hosts.get(serverId)?.state;
  }

  spec(serverId: number): HostSpec | undefined {
    return this.#hosts.get(serverId)?.spec;
  }

  #need(serverId: number) {
    const h = this.#hosts.get(serverId);
    if (!h || h.state === 'destroyed') throw new Error(`host ${serverId} does not exist`);
    return h;
  }
}
