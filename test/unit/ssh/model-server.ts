import { Secret } from '../../../common/secret.ts';
import {
  type PublicKey,
  parsePrivateKey,
  parsePublicKey,
  samePublicKey,
} from '../../../operator/ssh/keys.ts';
import type { RotationRemote, RotationSession } from '../../../operator/ssh/rotation.ts';
import { ed25519TestPair } from './test-keys.ts';

/**
 * A server modelled as its authorized_keys and its keygen folder: the rotation protocol's remote
 * side for the unit test (in-memory store) and the store test (Postgres). The real-sshd version
 * is test/integration/ssh/rotation.test.ts.
 */
export class ModelServer implements RotationRemote {
  authorized: PublicKey[] = [];
  keygenFiles = new Map<string, Secret>();

  async login(key: Secret): Promise<RotationSession | 'refused'> {
    const pub = parsePrivateKey(key).publicKey;
    if (!this.authorized.some((k) => samePublicKey(k, pub))) return 'refused';
    const server = this;
    return {
      async generateKey(id) {
        const pair = ed25519TestPair();
        const privateKey = Secret.of(pair.private);
        server.keygenFiles.set(id, privateKey);
        return { privateKey, publicKey: parsePublicKey(pair.public) };
      },
      async wipeKeygen() {
        server.keygenFiles.clear();
      },
      async authorizeKey(k) {
        if (!server.authorized.some((a) => samePublicKey(a, k))) server.authorized.push(k);
      },
      async revokeKeys(remove, keep) {
        server.authorized = server.authorized.filter(
          (a) => samePublicKey(a, keep) || !remove.some((r) => samePublicKey(r, a)),
        );
      },
      close() {},
    };
  }
}
