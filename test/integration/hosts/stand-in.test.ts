import { randomBytes, randomInt } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomTestIpv4 } from '../../hosts/leftovers.ts';
import { RealHostProvider } from '../../hosts/real-host-provider.ts';

// Light servers for the operator's scale benchmark (standInServices): the operator's Node
// unit and its compose services become HTTP stand-ins on the same addresses; the rest is real.
describe('a light server stands in for Node units and compose services', () => {
  const provider = new RealHostProvider({ standInServices: true });
  const serverId = randomInt(100_000, 900_000);
  const sh = async (script: string) => (await provider.exec(serverId, ['bash', '-c', script])).stdout;

  beforeAll(async () => {
    await provider.create({
      serverId,
      name: `light-${randomBytes(3).toString('hex')}`,
      ipv4: randomTestIpv4(),
      image: 'docker-ce',
    });
    await provider.boot(serverId, { kind: 'os' });
  });

  afterAll(async () => {
    await provider.close();
  });

  it('answers 200 on every --listen of a unit that runs node, and stop takes it away', async () => {
    await sh(`cat >/etc/systemd/system/fake-proxy.service <<'EOF'
[Service]
ExecStart=/opt/cannes/node-v0.0.0-linux-x64/bin/node /opt/none/does-not-exist.mjs --listen 172.17.0.1:3101 --listen 127.0.0.1:3102
EOF
systemctl daemon-reload && systemctl start fake-proxy`);
    const curl = (url: string) =>
      sh(
        `for i in $(seq 100); do curl -fsS --max-time 2 ${url} && exit 0; sleep 0.1; done; echo unreachable`,
      );
    expect(await curl('http://172.17.0.1:3101/healthz')).toBe('{"status":"ok"}');
    expect(await curl('http://127.0.0.1:3102/anything?x=1')).toBe('{"status":"ok"}');
    expect((await sh('systemctl is-active fake-proxy')).trim()).toBe('active');
    // The real command never ran: its file does not exist, and no node process is resident.
    expect(await sh("pgrep -f 'does-not-exist[.]mjs' || true")).toBe('');
    await sh('systemctl stop fake-proxy');
    expect(await sh('curl -sS --max-time 2 http://172.17.0.1:3101/ 2>&1 || true')).toMatch(
      /refused|Failed to connect/i,
    );
  });

  it('runs a compose service as a stand-in in its own container, behind its published port', async () => {
    await sh(`mkdir -p /opt/gw && cat >/opt/gw/compose.yaml <<'EOF'
services:
  gateway:
    image: ghcr.io/openclaw/openclaw:2026.1.1
    command: ["node", "/app/never-run.js"]
    ports:
      - "127.0.0.1:18789:18789"
EOF
docker compose -f /opt/gw/compose.yaml up -d`);
    const body = await sh(
      'for i in $(seq 100); do curl -fsS --max-time 2 http://127.0.0.1:18789/healthz && exit 0; sleep 0.1; done; echo unreachable',
    );
    expect(body).toBe('{"status":"ok"}');
    const ps = JSON.parse(
      (await sh('docker compose -f /opt/gw/compose.yaml ps --format json')).trim().split('\n')[0] ?? '{}',
    ) as Record<string, unknown>;
    expect(ps).toMatchObject({ Service: 'gateway', State: 'running', IP: '172.17.0.2' });
    // No Node process stays resident on a light server: that is what makes 200 of them fit.
    expect(await sh('pgrep -x node || true')).toBe('');
    await sh('docker compose -f /opt/gw/compose.yaml down');
    expect(await sh('curl -sS --max-time 2 http://127.0.0.1:18789/ 2>&1 || true')).toMatch(
      /refused|Failed to connect/i,
    );
  });
});
