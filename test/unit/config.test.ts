import { describe, expect, it } from 'vitest';
import { parseListen, parseRunConfig } from '../../operator/config.ts';

const env = { DATABASE_URL: 'postgres://u:FAKEPASSWORD@127.0.0.1/db', CANNES_MASTER_KEYS_FILE: '/keys' };

describe('operator configuration', () => {
  it('has defaults that match the chart (metrics :8080, probes :8081)', () => {
    const c = parseRunConfig([], env);
    expect(c.metrics).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(c.probes).toEqual({ host: '0.0.0.0', port: 8081 });
    expect(c.leaderElect).toBe(false);
    expect(c.hcloudEndpoint).toBe('https://api.hetzner.cloud/v1');
  });

  it('names a missing variable and never prints the database password', () => {
    expect(() => parseRunConfig([], { CANNES_MASTER_KEYS_FILE: '/k' })).toThrow(/DATABASE_URL/);
    expect(() => parseRunConfig([], { ...env, DATABASE_URL: 'mysql://u:FAKEPASSWORD@h/db' })).toThrow(
      /^(?!.*FAKEPASSWORD).*DATABASE_URL/,
    );
    expect(() => parseRunConfig([], { DATABASE_URL: env.DATABASE_URL })).toThrow(/CANNES_MASTER_KEYS_FILE/);
    expect(JSON.stringify(parseRunConfig([], env))).not.toContain('FAKEPASSWORD');
  });

  it('rejects unknown flags, bad ports, bad counts and unknown providers', () => {
    expect(() => parseRunConfig(['--nope'], env)).toThrow(/flags/);
    expect(() => parseListen('--x', ':99999')).toThrow(/range/);
    expect(() => parseListen('--x', 'nohost')).toThrow(/HOST:PORT/);
    expect(() => parseRunConfig(['--workers', '0'], env)).toThrow(/--workers/);
    expect(() => parseRunConfig(['--provider-origin', 'acme=http://127.0.0.1:1'], env)).toThrow(/provider/);
  });

  it('watches every namespace unless told one, and checks its name', () => {
    expect(parseRunConfig([], env).watchNamespace).toBeUndefined();
    expect(parseRunConfig(['--watch-namespace', 'team-a'], env).watchNamespace).toBe('team-a');
    expect(parseRunConfig([], { ...env, WATCH_NAMESPACE: 'team-b' }).watchNamespace).toBe('team-b');
    expect(() => parseRunConfig(['--watch-namespace', 'Team_A'], env)).toThrow(/--watch-namespace/);
  });

  it('takes operator-set provider origins', () => {
    const c = parseRunConfig(
      ['--provider-origin', 'anthropic=http://127.0.0.1:9000/', '--leader-elect'],
      env,
    );
    expect(c.providerOrigins).toEqual({ anthropic: 'http://127.0.0.1:9000' });
    expect(c.leaderElect).toBe(true);
  });

  it('takes --resync as a Go duration, and whole seconds as before', () => {
    expect(parseRunConfig([], env).resyncMs).toBe(600_000);
    expect(parseRunConfig(['--resync', '10m'], env).resyncMs).toBe(600_000);
    expect(parseRunConfig(['--resync', '1h30m'], env).resyncMs).toBe(5_400_000);
    expect(parseRunConfig(['--resync', '90'], env).resyncMs).toBe(90_000);
    expect(parseRunConfig(['--resync', '0'], env).resyncMs).toBe(0);
    expect(() => parseRunConfig(['--resync', 'ten'], env)).toThrow(/--resync/);
    expect(() => parseRunConfig(['--resync', '25h'], env)).toThrow(/--resync: at most 24h/);
  });

  it('accepts exactly the listed log levels and formats', () => {
    for (const level of ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])
      expect(parseRunConfig(['--log-level', level], env).logLevel).toBe(level);
    expect(() => parseRunConfig(['--log-level', 'verbose'], env)).toThrow(/--log-level/);
    expect(() => parseRunConfig([], { ...env, LOG_LEVEL: 'INFO' })).toThrow(/LOG_LEVEL/);
    expect(parseRunConfig([], { ...env, LOG_LEVEL: '' }).logLevel).toBe('info');
    expect(parseRunConfig([], env).logFormat).toBe('json');
    expect(parseRunConfig(['--log-format', 'console'], env).logFormat).toBe('console');
    expect(() => parseRunConfig(['--log-format', 'pretty'], env)).toThrow(/--log-format/);
  });

  it('names the Lease after --leader-election-id', () => {
    expect(parseRunConfig([], env).leaseName).toBe('cannes-operator');
    expect(parseRunConfig(['--leader-election-id', 'cannes-team-a'], env).leaseName).toBe('cannes-team-a');
    expect(() => parseRunConfig(['--leader-election-id', 'Bad_Name'], env)).toThrow(/--leader-election-id/);
  });
});
