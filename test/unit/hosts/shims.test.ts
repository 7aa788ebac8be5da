import { describe, expect, it } from 'vitest';
import { splitWords } from '../../hosts/shims/systemctl.ts';

describe('the systemctl shim reads ExecStart= like systemd', () => {
  it('splits on whitespace and keeps quoted words whole', () => {
    expect(splitWords('/usr/bin/node /opt/cannes/proxy.mjs --listen "172.17.0.1:3101"')).toEqual([
      '/usr/bin/node',
      '/opt/cannes/proxy.mjs',
      '--listen',
      '172.17.0.1:3101',
    ]);
    expect(splitWords(`sh -c 'echo "a b"'  x`)).toEqual(['sh', '-c', 'echo "a b"', 'x']);
    expect(splitWords('"A=b c" D=e')).toEqual(['A=b c', 'D=e']);
  });
});
