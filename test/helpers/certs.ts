// A throwaway PKI for TLS tests, made with the real openssl CLI: a main CA,
// an unrelated "other" CA (for untrusted-certificate tests), and leaf
// certificates issued on demand with SANs, client/server key usage and any
// validity window — including already expired and not yet valid ones.
//
// Leaves are signed with `openssl ca` rather than `openssl x509 -req`:
// OpenSSL 3.0 (these machines) has no `-not_before` / `-not_after` on x509
// (they arrived in 3.4), while `openssl ca -startdate/-enddate` sets any
// window. Keys are EC P-256 (fast to make; accepted by Node, libpq and
// PostgreSQL). Private keys are written 0600, as PostgreSQL requires of
// ssl_key_file.

import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface IssueOptions {
  /** Subject CN (any UTF-8; "/" and "+" are escaped). */
  cn: string;
  /** 'DNS:localhost', 'IP:127.0.0.1', 'IP:::1', 'URI:spiffe://…', 'email:…' */
  san?: string[];
  /** Extended key usage clientAuth. Default false. */
  client?: boolean;
  /** Extended key usage serverAuth. Default: true unless `client` is set. */
  server?: boolean;
  /** Validity in days from now (from the start for notYetValid). Default 365. */
  days?: number;
  /** Valid from 2 days ago until 1 day ago. */
  expired?: boolean;
  /** Valid from 1 day from now (for `days` days). */
  notYetValid?: boolean;
  /** The issuing CA. Default 'main'. */
  ca?: 'main' | 'other';
}

export interface IssuedCert {
  /** PEM certificate path. */
  cert: string;
  /** PEM (PKCS#8) private key path, mode 0600. */
  key: string;
}

export interface TestPki {
  dir: string;
  /** Main CA certificate and key paths (the CA a test trusts). */
  caCert: string;
  caKey: string;
  /** A CA nobody trusts: certificates from it must be refused. */
  otherCaCert: string;
  issue(name: string, options: IssueOptions): IssuedCert;
  /** Remove the directory. */
  cleanup(): void;
}

const DAY_MS = 86_400_000;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const SAN = /^(?:DNS|IP|URI|email):[^,\r\n\0]+$/;

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString().trim() || e.message}`, { cause: err });
  }
}

/** openssl ca's date format (GeneralizedTime text; written as UTCTime before 2050). */
function asn1Time(ms: number): string {
  return `${new Date(ms).toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`;
}

/** One -subj RDN value: openssl splits on unescaped "/" and "+". */
function subjectValue(text: string): string {
  return text.replace(/[\\/+]/g, (c) => `\\${c}`);
}

function caConfig(caDir: string): string {
  return `# written by test/helpers/certs.ts
[ ca ]
default_ca = this_ca

[ this_ca ]
dir = ${caDir}
certificate = ${caDir}/ca.crt
private_key = ${caDir}/ca.key
database = ${caDir}/index.txt
new_certs_dir = ${caDir}/issued
serial = ${caDir}/serial
default_md = sha256
policy = policy_cn
unique_subject = no
copy_extensions = none
email_in_dn = no

[ policy_cn ]
commonName = supplied

[ req ]
distinguished_name = req_dn
prompt = no
string_mask = utf8only
utf8 = yes

[ req_dn ]
CN = placeholder

[ v3_ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
`;
}

export function createTestPki(): TestPki {
  const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-pki-'));
  // Paths go into openssl config files: keep them to characters the config syntax reads literally.
  if (!/^[\w/.-]+$/.test(dir)) throw new Error(`temporary directory ${dir} has characters openssl config files would misread`);
  const now = Date.now();
  const issued = new Set<string>();

  function makeKey(file: string): void {
    openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file], dir);
    chmodSync(file, 0o600);
  }

  function makeCa(name: 'main' | 'other', cn: string): string {
    const caDir = path.join(dir, `${name}-ca`);
    mkdirSync(path.join(caDir, 'issued'), { recursive: true });
    writeFileSync(path.join(caDir, 'index.txt'), '');
    writeFileSync(path.join(caDir, 'serial'), '1000\n');
    writeFileSync(path.join(caDir, 'openssl.cnf'), caConfig(caDir));
    const config = path.join(caDir, 'openssl.cnf');
    makeKey(path.join(caDir, 'ca.key'));
    openssl(['req', '-new', '-config', config, '-key', path.join(caDir, 'ca.key'), '-subj', `/CN=${subjectValue(cn)}`, '-utf8', '-out', path.join(caDir, 'ca.csr')], dir);
    // Self-signed through `openssl ca` so the CA, too, gets a window that starts in the past.
    openssl(
      ['ca', '-batch', '-notext', '-selfsign', '-config', config, '-in', path.join(caDir, 'ca.csr'), '-out', path.join(caDir, 'ca.crt'),
        '-startdate', asn1Time(now - 30 * DAY_MS), '-enddate', asn1Time(now + 3650 * DAY_MS), '-extensions', 'v3_ca'],
      dir,
    );
    return caDir;
  }

  const mainCa = makeCa('main', 'rolegate test CA');
  const otherCa = makeCa('other', 'unrelated test CA');

  function issue(name: string, options: IssueOptions): IssuedCert {
    if (!NAME.test(name)) throw new Error(`certificate name ${JSON.stringify(name)}: use letters, digits, ".", "_", "-"`);
    if (issued.has(name)) throw new Error(`certificate ${name} was already issued by this PKI`);
    if (options.cn === '') throw new Error('cn must not be empty');
    for (const entry of options.san ?? []) if (!SAN.test(entry)) throw new Error(`SAN ${JSON.stringify(entry)}: expected DNS:, IP:, URI: or email: without commas`);
    if (options.expired === true && options.notYetValid === true) throw new Error('a certificate cannot be both expired and not yet valid');
    const days = options.days ?? 365;
    if (!(days > 0)) throw new Error('days must be positive');
    issued.add(name);

    const caDir = options.ca === 'other' ? otherCa : mainCa;
    const key = path.join(dir, `${name}.key`);
    const cert = path.join(dir, `${name}.crt`);
    const csr = path.join(dir, `${name}.csr`);
    const extFile = path.join(dir, `${name}.ext.cnf`);

    const client = options.client ?? false;
    const server = options.server ?? !client;
    const usages = [server ? 'serverAuth' : null, client ? 'clientAuth' : null].filter((u) => u !== null);
    const ext = [
      '[ leaf ]',
      'basicConstraints = critical,CA:FALSE',
      'keyUsage = critical,digitalSignature',
      'subjectKeyIdentifier = hash',
      'authorityKeyIdentifier = keyid,issuer',
    ];
    if (usages.length > 0) ext.push(`extendedKeyUsage = ${usages.join(',')}`);
    if (options.san !== undefined && options.san.length > 0) ext.push(`subjectAltName = ${options.san.join(',')}`);
    writeFileSync(extFile, `${ext.join('\n')}\n`);

    let start: number;
    let end: number;
    if (options.expired === true) {
      start = now - 2 * DAY_MS;
      end = now - DAY_MS;
    } else if (options.notYetValid === true) {
      start = now + DAY_MS;
      end = start + days * DAY_MS;
    } else {
      start = now - 60 * 60_000; // an hour of slack for clocks
      end = now + days * DAY_MS;
    }

    const config = path.join(caDir, 'openssl.cnf');
    makeKey(key);
    openssl(['req', '-new', '-config', config, '-key', key, '-subj', `/CN=${subjectValue(options.cn)}`, '-utf8', '-out', csr], dir);
    openssl(
      ['ca', '-batch', '-notext', '-config', config, '-in', csr, '-out', cert, '-startdate', asn1Time(start), '-enddate', asn1Time(end), '-extfile', extFile, '-extensions', 'leaf'],
      dir,
    );
    return { cert, key };
  }

  return {
    dir,
    caCert: path.join(mainCa, 'ca.crt'),
    caKey: path.join(mainCa, 'ca.key'),
    otherCaCert: path.join(otherCa, 'ca.crt'),
    issue,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
