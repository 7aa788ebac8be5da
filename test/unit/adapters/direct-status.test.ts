import { describe, expect, it } from 'vitest';
import { parseDirectStatus } from '../../../operator/adapters/ssh.ts';
import { INTAKE_PORT, intakeConfig, intakeUnit, nftablesRules } from '../../../operator/host/index.ts';
import { INTAKE_PATH } from '../../../operator/host/layout.ts';
import { INTAKE_PREFIX } from '../../../proxy/intake.ts';

describe("the server's Direct key report", () => {
  it('passes booleans per route and nothing else', () => {
    expect(parseDirectStatus('{"mine":true,"other":false}\n')).toEqual({ mine: true, other: false });
    // Whatever the helper printed that is not a boolean (a key, by mistake) is refused whole.
    for (const bad of ['{"mine":"sk-ant-fake"}', 'sk-ant-fake', '[true]', '{"Bad Name":true}'])
      expect(() => parseDirectStatus(bad)).toThrow(/Direct key report/);
    try {
      parseDirectStatus('{"mine":"sk-ant-fake-canary"}');
    } catch (err) {
      expect(String(err)).not.toContain('sk-ant-fake-canary');
    }
  });
});

describe('the key intake on the host', () => {
  it('listens on loopback only, and the firewall drops its port from every other interface', () => {
    expect(intakeUnit()).toContain(
      `intake --keys /root/.model-keys.json --direct-keys /root/.model-keys.direct.json --owners /etc/cannes/intake.json --listen 127.0.0.1:${INTAKE_PORT}\n`,
    );
    const nft = nftablesRules();
    expect(nft.indexOf('iifname "lo" accept')).toBeLessThan(
      nft.indexOf(`tcp dport ${INTAKE_PORT} counter drop`),
    );
    expect(INTAKE_PATH).toBe(INTAKE_PREFIX);
    expect(JSON.parse(intakeConfig(['alice@example.com']))).toEqual({ owners: ['alice@example.com'] });
  });
});
