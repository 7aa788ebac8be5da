import { randomBytes } from 'node:crypto';
import { type Keyring, parseKeyring } from '../../../operator/store/keyring.ts';

/** A keyring of freshly generated test keys (never a fixed key in the repository). */
export function keyringText(kids: string[]): string {
  return kids.map((kid) => `${kid} ${randomBytes(32).toString('base64')}`).join('\n');
}

export async function testKeyring(kids: string[] = ['test-k1']): Promise<Keyring> {
  return parseKeyring(keyringText(kids), 'test');
}
