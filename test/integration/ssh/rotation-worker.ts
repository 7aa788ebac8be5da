// One rotation run in its own process, against the real Postgres store and a real sshd.
// With CANNES_FAULT=<point> it SIGKILLs itself right after that step: a real crash, no
// finally blocks, no clean disconnect. Input on stdin (JSON, holds the test keyring):
// { url, keyring, vpsId, ipv4, hostKey }. Prints the result JSON on success.
import { text } from 'node:stream/consumers';
import { rotationStore } from '../../../operator/adapters/store.ts';
import { parsePublicKey } from '../../../operator/ssh/keys.ts';
import { type RotationFaultPoint, rotateSshKey, sshRotationRemote } from '../../../operator/ssh/rotation.ts';
import { parseKeyring } from '../../../operator/store/keyring.ts';
import { PostgresStore } from '../../../operator/store/postgres.ts';

const input: unknown = JSON.parse(await text(process.stdin));
if (typeof input !== 'object' || input === null) throw new Error('bad input');
const { url, keyring, vpsId, ipv4, hostKey } = input as Record<string, string>;
const fault = process.env['CANNES_FAULT'];
const { store } = await PostgresStore.open({
  connectionString: url ?? '',
  keyring: await parseKeyring(keyring ?? '', 'stdin'),
});
const r = await rotateSshKey({
  store: rotationStore(store),
  remote: sshRotationRemote({ host: ipv4 ?? '' }, parsePublicKey(hostKey ?? ''), { retryForMs: 20_000 }),
  vpsId: vpsId ?? '',
  fault: (p: RotationFaultPoint) => {
    if (p === fault) process.kill(process.pid, 'SIGKILL');
  },
});
await store.close();
process.stdout.write(`${JSON.stringify(r)}\n`);
