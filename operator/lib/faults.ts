/**
 * Fault points for the crash tests (test/integration/operator/crash.test.ts): the operator
 * dies at once, without cleanup, at a named step boundary, exactly as a SIGKILL or an OOM
 * kill would leave things. A no-op unless CANNES_FAULT_POINT is set.
 *
 * CANNES_FAULT_POINT=<name>       exit(137) the first time <name> is reached
 * CANNES_FAULT_POINT=<name>@<n>   exit(137) the n-th time (1-based) <name> is reached
 *
 * The variable is read at every call (cheap) so a test can set it per process only; nothing
 * in the chart sets it.
 */
const hits = new Map<string, number>();

export function faultPoint(name: string): void {
  const spec = process.env['CANNES_FAULT_POINT'];
  if (spec === undefined || spec === '') return;
  const at = spec.lastIndexOf('@');
  const point = at === -1 ? spec : spec.slice(0, at);
  const nth = at === -1 ? 1 : Number(spec.slice(at + 1));
  if (point !== name) return;
  const n = (hits.get(name) ?? 0) + 1;
  hits.set(name, n);
  if (n !== nth) return;
  // One line on stderr so a test can tell "died at the point" from any other death.
  process.stderr.write(`cannes fault point reached: ${name}\n`);
  process.exit(137);
}
