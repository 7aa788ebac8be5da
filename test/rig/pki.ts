import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** File paths of the rig's throwaway PKI (all inside the rig's temp dir, keys mode 600). */
export type RigPki = {
  caCert: string;
  caKey: string;
  servingCert: string;
  servingKey: string;
  adminCert: string;
  adminKey: string;
  /** Service-account token signing key (private) and its public half for verification. */
  saKey: string;
  saPub: string;
};

const DAYS = '7';

async function openssl(args: string[]): Promise<void> {
  await run('openssl', args, { timeout: 30_000 });
}

export async function leaf(
  dir: string,
  name: string,
  subject: string,
  ext: string[],
  ca: { cert: string; key: string },
): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.crt`);
  const extFile = join(dir, `${name}.ext`);
  await writeFile(extFile, `${ext.join('\n')}\n`);
  await openssl([
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    key,
    '-out',
    csr,
    '-subj',
    subject,
  ]);
  await openssl([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca.cert,
    '-CAkey',
    ca.key,
    // A random serial per certificate: -CAcreateserial would share one ca.srl file between the
    // certificates issued in parallel and race on it.
    '-set_serial',
    `0x${randomBytes(16).toString('hex')}`,
    '-days',
    DAYS,
    '-sha256',
    '-extfile',
    extFile,
    '-out',
    cert,
  ]);
  return { cert, key };
}

/**
 * A fresh CA per rig (node:crypto cannot issue certificates, so the openssl CLI does), a serving
 * certificate for 127.0.0.1/localhost and the `kubernetes` Service (10.0.0.1, kubernetes.default.svc), an admin client certificate in `system:masters`, and an
 * EC P-256 service-account signing key so TokenRequest works. Nothing is reused between rigs.
 */
export async function generatePki(dir: string): Promise<RigPki> {
  const caKey = join(dir, 'ca.key');
  const caCert = join(dir, 'ca.crt');
  await openssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    caKey,
    '-out',
    caCert,
    '-days',
    DAYS,
    '-subj',
    '/CN=cannes-rig-ca',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  const ca = { cert: caCert, key: caKey };
  const [serving, admin] = await Promise.all([
    leaf(
      dir,
      'serving',
      '/CN=kube-apiserver',
      [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage=serverAuth',
        // 10.0.0.1: the `kubernetes` Service's ClusterIP, where pods on the rig's node reach the
        // API server (test/rig/node.ts forwards it to the loopback port).
        'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes.default.svc',
      ],
      ca,
    ),
    leaf(
      dir,
      'admin',
      '/O=system:masters/CN=cannes-rig-admin',
      [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage=clientAuth',
      ],
      ca,
    ),
  ]);
  const sa = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const saKey = join(dir, 'sa.key');
  const saPub = join(dir, 'sa.pub');
  await writeFile(saKey, sa.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  await writeFile(saPub, sa.publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o644 });
  return {
    caCert,
    caKey,
    servingCert: serving.cert,
    servingKey: serving.key,
    adminCert: admin.cert,
    adminKey: admin.key,
    saKey,
    saPub,
  };
}
