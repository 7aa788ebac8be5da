import ssh2 from 'ssh2';
import { parsePublicKey } from '../../../operator/ssh/keys.ts';

/**
 * An ed25519 key pair for tests (the operator's own keys are born on servers, by ssh-keygen).
 * ssh2 1.17's generateKeyPairSync drops a leading zero byte of the public key about once in
 * 200 calls, giving a 31-byte ed25519 key that our boundary parser rightly refuses: such
 * pairs are skipped.
 */
export function ed25519TestPair(): { public: string; private: string } {
  for (;;) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519');
    try {
      parsePublicKey(pair.public);
      return pair;
    } catch {
      // the ssh2 bug above; try again
    }
  }
}
