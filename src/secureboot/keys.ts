/**
 * A complete, self-owned Secure Boot key hierarchy: PK → KEK → db, each an RSA key with a self-signed
 * certificate, its EFI_SIGNATURE_LIST and a signed authenticated-variable update:
 *
 *   DIR/{PK,KEK,db}.key   private key, PKCS#8 PEM, mode 0600
 *   DIR/{PK,KEK,db}.crt   certificate, PEM          DIR/{PK,KEK,db}.der   certificate, DER
 *   DIR/{PK,KEK,db}.esl   EFI_SIGNATURE_LIST with that one certificate, owned by the owner GUID
 *   DIR/{PK,KEK,db}.auth  PK.auth signed by PK, KEK.auth signed by PK, db.auth signed by KEK
 *   DIR/GUID.txt          the owner GUID
 *   DIR/loader/keys/auto/{PK,KEK,db}.auth
 *       the layout systemd-boot (≥ 252) reads from the ESP: with `secure-boot-enroll if-safe|force` in
 *       loader.conf and the firmware in setup mode it enrolls \loader\keys\auto\{db,KEK,PK}.auth (db first,
 *       PK last, which leaves setup mode) and reboots. Copy DIR/loader to the ESP root to use it.
 *
 * Every file is written atomically (temp + fsync + rename); the private keys never exist with wider
 * permissions. Existing keys are not overwritten unless `force` is set.
 */
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import { BootcfsError } from '../errors.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { isGuid, randomGuid, x509SignatureList } from './esl.js';
import { signVariableUpdate } from './auth.js';
import { createSelfSignedCertificate, generateRsaKey, type RsaKeyType } from './x509.js';

export const SECURE_BOOT_KEY_NAMES = ['PK', 'KEK', 'db'] as const;
export type SecureBootKeyName = (typeof SECURE_BOOT_KEY_NAMES)[number];
/** Where systemd-boot looks for keys to auto-enroll, relative to the ESP root. */
export const SYSTEMD_BOOT_AUTO_ENROLL_DIR = 'loader/keys/auto';

export interface GenerateSecureBootKeysOptions {
  /** Prefix of each certificate's commonName: "<commonName> PK" etc. (default "bootcfs Secure Boot"). */
  commonName?: string;
  /** Owner GUID of every signature list entry (default: random). */
  ownerGuid?: string;
  keyType?: RsaKeyType;
  /** Certificate validity in days (default 3650). */
  days?: number;
  /** Timestamp of the signed variable updates (default now). */
  timestamp?: Date;
  /** Overwrite existing key files (default false: refuse). */
  force?: boolean;
}

export interface SecureBootKey {
  name: SecureBootKeyName;
  key: KeyObject;
  keyPem: string;
  certPem: string;
  certDer: Buffer;
  esl: Buffer;
  auth: Buffer;
  /** absolute paths of the files written */
  files: { key: string; crt: string; der: string; esl: string; auth: string; autoEnrollAuth: string };
}

export interface SecureBootKeys {
  dir: string;
  ownerGuid: string;
  PK: SecureBootKey;
  KEK: SecureBootKey;
  db: SecureBootKey;
  /** DIR/loader/keys/auto */
  autoEnrollDir: string;
}

/** Create the PK/KEK/db hierarchy in memory (no files). */
export type SecureBootKeyMaterial = { ownerGuid: string } & Record<SecureBootKeyName, Omit<SecureBootKey, 'files'>>;

export function createSecureBootKeys(opts: Omit<GenerateSecureBootKeysOptions, 'force'> = {}): SecureBootKeyMaterial {
  const ownerGuid = (opts.ownerGuid ?? randomGuid()).toLowerCase();
  if (!isGuid(ownerGuid)) throw new BootcfsError('EINVAL', `invalid owner GUID '${opts.ownerGuid}'`);
  const cn = opts.commonName ?? 'bootcfs Secure Boot';
  if (cn.length === 0 || cn.length > 60) throw new BootcfsError('EINVAL', 'common name must be 1..60 characters');
  const timestamp = opts.timestamp ?? new Date();
  const made = {} as Record<SecureBootKeyName, Omit<SecureBootKey, 'files' | 'auth'>>;
  for (const name of SECURE_BOOT_KEY_NAMES) {
    const key = generateRsaKey(opts.keyType ?? 'rsa2048');
    const cert = createSelfSignedCertificate(key, { commonName: `${cn} ${name}`, ca: name !== 'db', ...(opts.days ? { days: opts.days } : {}) });
    made[name] = {
      name,
      key,
      keyPem: key.export({ type: 'pkcs8', format: 'pem' }) as string,
      certPem: cert.pem,
      certDer: cert.der,
      esl: x509SignatureList(cert.der, ownerGuid),
    };
  }
  const signer: Record<SecureBootKeyName, SecureBootKeyName> = { PK: 'PK', KEK: 'PK', db: 'KEK' };
  const out = { ownerGuid } as SecureBootKeyMaterial;
  for (const name of SECURE_BOOT_KEY_NAMES) {
    const s = made[signer[name]];
    const auth = signVariableUpdate({ name, data: made[name].esl, key: s.key, cert: s.certDer, timestamp });
    out[name] = { ...made[name], auth };
  }
  return out;
}

/** Generate the key hierarchy and write it to `dir` (created if missing). */
export async function generateSecureBootKeys(dir: string, opts: GenerateSecureBootKeysOptions = {}): Promise<SecureBootKeys> {
  const root = path.resolve(dir);
  const autoDir = path.join(root, SYSTEMD_BOOT_AUTO_ENROLL_DIR);
  if (!opts.force) {
    for (const name of SECURE_BOOT_KEY_NAMES) {
      const p = path.join(root, `${name}.key`);
      if (existsSync(p)) throw new BootcfsError('EINVAL', `${p} already exists; refusing to overwrite keys (use force)`);
    }
  }
  const keys = createSecureBootKeys(opts);
  await fsp.mkdir(autoDir, { recursive: true });
  const result = { dir: root, ownerGuid: keys.ownerGuid, autoEnrollDir: autoDir } as SecureBootKeys;
  for (const name of SECURE_BOOT_KEY_NAMES) {
    const k = keys[name];
    const files = {
      key: path.join(root, `${name}.key`),
      crt: path.join(root, `${name}.crt`),
      der: path.join(root, `${name}.der`),
      esl: path.join(root, `${name}.esl`),
      auth: path.join(root, `${name}.auth`),
      autoEnrollAuth: path.join(autoDir, `${name}.auth`),
    };
    await writeFileAtomic(files.key, Buffer.from(k.keyPem), { mode: 0o600 });
    await writeFileAtomic(files.crt, Buffer.from(k.certPem));
    await writeFileAtomic(files.der, k.certDer);
    await writeFileAtomic(files.esl, k.esl);
    await writeFileAtomic(files.auth, k.auth);
    await writeFileAtomic(files.autoEnrollAuth, k.auth);
    result[name] = { ...k, files };
  }
  await writeFileAtomic(path.join(root, 'GUID.txt'), Buffer.from(`${keys.ownerGuid}\n`));
  return result;
}
