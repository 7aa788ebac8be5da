/**
 * How the Hetzner simulator turns its servers into hosts. The simulator owns the API state
 * (ids, status, actions, rescue flag, root password); a HostProvider owns what a server IS.
 * `test/hcloud-sim/state-only-provider.ts` only records calls; `test/hosts/` makes each
 * server a real Linux host (network namespace, sshd, rescue/OS boot modes).
 */
export interface HostSpec {
  /** Hetzner server id. */
  readonly serverId: number;
  readonly name: string;
  /** Public IPv4 allocated by the simulator from 198.18.0.0/15. */
  readonly ipv4: string;
  /** Image name the server was created from (e.g. `docker-ce`, `ubuntu-24.04`). */
  readonly image: string;
  /** Public keys of the SSH keys given at create (installed for root in the OS). Optional. */
  readonly sshKeys?: readonly string[];
  /** Root password of the OS when no SSH key was given (Hetzner mails it; the API returns it). */
  readonly rootPassword?: string;
  /** cloud-init user data, when given. */
  readonly userData?: string;
}

export type BootMode =
  /** Hetzner's rescue system: fresh host key, root login with the one-time password. */
  | { readonly kind: 'rescue'; readonly rootPassword: string; readonly sshKeys: readonly string[] }
  /** The installed OS on the server's disk. */
  | { readonly kind: 'os' };

export interface HostProvider {
  /** The server exists (its disk is laid out) but is powered off. */
  create(spec: HostSpec): Promise<void>;
  /** Power on / reset / reboot into the given mode. Stops whatever ran before. */
  boot(serverId: number, mode: BootMode): Promise<void>;
  /** Power off (hard). */
  powerOff(serverId: number): Promise<void>;
  /** The server is deleted: everything it had is gone. */
  destroy(serverId: number): Promise<void>;
  /** Tear down every host this provider made. */
  close(): Promise<void>;
}
