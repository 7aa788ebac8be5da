// Light servers (RealHostProvider standInServices, benchmarks only): what the docker and
// systemctl shims run instead of a long-running service. See docs/hosts.md.
import { existsSync } from 'node:fs';

/** Present in the server when its provider made it light. */
const MARKER = '/run/cannes/shims/stand-in';
/** The HTTP answer (stand-in-http.sh), as the server sees it. */
export const STAND_IN_HTTP = '/run/cannes/shims/stand-in-http.sh';

export function isLightServer(): boolean {
  return existsSync(MARKER);
}

/**
 * A shell command line that runs one socat per `[host:]port`, each answering every HTTP
 * request with 200 through `script`, and waits for them (one process group to stop).
 */
export function standInCommand(listens: readonly { host?: string; port: number }[], script: string): string {
  const socats = listens.map(
    (l) =>
      `socat TCP-LISTEN:${l.port}${l.host === undefined ? '' : `,bind=${l.host}`},fork,reuseaddr SYSTEM:${script} &`,
  );
  return `${socats.join(' ')} wait`;
}
