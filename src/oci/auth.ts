/**
 * Registry credentials from the files podman/skopeo and docker write:
 *
 *   1. $REGISTRY_AUTH_FILE
 *   2. ${XDG_RUNTIME_DIR}/containers/auth.json
 *   3. ~/.config/containers/auth.json  (${XDG_CONFIG_HOME} when set)
 *   4. ~/.docker/config.json           (${DOCKER_CONFIG}/config.json when set)
 *
 * Each file is a JSON object with `auths: { KEY: { auth: base64("user:password") } }` (also
 * `identitytoken`, used as an OAuth2 refresh token by the bearer flow). Files are consulted in order and
 * the first entry that matches wins. KEY may be `host[:port]`, `host[:port]/namespace[/repo]` (the most
 * specific match wins, as in containers/image), or a URL such as `https://index.docker.io/v1/`.
 * Credential helpers (`credHelpers`, `credsStore`) are not executed; entries that need them are absent
 * from `auths` and the registry is then contacted anonymously.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BootcfsError } from '../errors.js';
import { DOCKER_HUB } from './reference.js';

export class AuthFileError extends BootcfsError {
  readonly file: string;
  constructor(file: string, why: string) {
    super('EFORMAT', `invalid registry auth file ${file}: ${why}`);
    this.name = 'AuthFileError';
    this.file = file;
  }
}

export interface Credentials {
  username: string;
  password: string;
  /** OAuth2 refresh token (docker `identitytoken`) */
  identityToken?: string;
}

export interface AuthEntry {
  key: string;
  credentials: Credentials;
}

export interface AuthLookupEnv {
  env?: NodeJS.ProcessEnv;
  home?: string;
}

/** The auth files to consult, in order (existing or not). */
export function authFilePaths({ env = process.env, home = os.homedir() }: AuthLookupEnv = {}): string[] {
  const files: string[] = [];
  if (env.REGISTRY_AUTH_FILE) files.push(env.REGISTRY_AUTH_FILE);
  if (env.XDG_RUNTIME_DIR) files.push(path.join(env.XDG_RUNTIME_DIR, 'containers/auth.json'));
  files.push(path.join(env.XDG_CONFIG_HOME || path.join(home, '.config'), 'containers/auth.json'));
  files.push(path.join(env.DOCKER_CONFIG || path.join(home, '.docker'), 'config.json'));
  return files;
}

/** Normalises an `auths` key to `host[:port][/path]`, with Docker Hub's aliases mapped to docker.io. */
export function normalizeAuthKey(key: string): string {
  let k = key.replace(/^https?:\/\//, '');
  k = k.replace(/\/+$/, '');
  const slash = k.indexOf('/');
  let host = slash < 0 ? k : k.slice(0, slash);
  let rest = slash < 0 ? '' : k.slice(slash);
  // Docker writes `https://index.docker.io/v1/`; the `/v1` is the API version, not a namespace.
  if (/^\/v[12]$/.test(rest)) rest = '';
  if (host === 'index.docker.io' || host === 'registry-1.docker.io') host = DOCKER_HUB;
  return host + rest;
}

/** Parses an auth file's contents into entries. Hostile or malformed content → AuthFileError. */
export function parseAuthFile(text: string, file = '<auth file>'): AuthEntry[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new AuthFileError(file, `not valid JSON (${(e as Error).message})`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new AuthFileError(file, 'must be a JSON object');
  const auths = (doc as Record<string, unknown>).auths;
  if (auths === undefined) return [];
  if (typeof auths !== 'object' || auths === null || Array.isArray(auths)) throw new AuthFileError(file, '`auths` must be an object');
  const entries: AuthEntry[] = [];
  for (const [key, value] of Object.entries(auths as Record<string, unknown>)) {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new AuthFileError(file, `auths["${key}"] must be an object`);
    const v = value as Record<string, unknown>;
    let username = '';
    let password = '';
    if (v.auth !== undefined && v.auth !== '') {
      if (typeof v.auth !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v.auth)) {
        throw new AuthFileError(file, `auths["${key}"].auth must be a base64 string`);
      }
      const decoded = Buffer.from(v.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) throw new AuthFileError(file, `auths["${key}"].auth does not decode to user:password`);
      username = decoded.slice(0, colon);
      password = decoded.slice(colon + 1);
    } else if (v.username !== undefined || v.password !== undefined) {
      if (typeof v.username !== 'string' || typeof v.password !== 'string') {
        throw new AuthFileError(file, `auths["${key}"].username/password must be strings`);
      }
      username = v.username;
      password = v.password;
    }
    const credentials: Credentials = { username, password };
    if (v.identitytoken !== undefined) {
      if (typeof v.identitytoken !== 'string') throw new AuthFileError(file, `auths["${key}"].identitytoken must be a string`);
      if (v.identitytoken !== '') credentials.identityToken = v.identitytoken;
    }
    if (username === '' && password === '' && credentials.identityToken === undefined) continue;
    entries.push({ key: normalizeAuthKey(key), credentials });
  }
  return entries;
}

/** Most specific entry for `registry/repository` among `entries`, or undefined. */
export function matchAuthEntry(entries: AuthEntry[], registry: string, repository: string): Credentials | undefined {
  const host = normalizeAuthKey(registry);
  const parts = repository.split('/');
  for (let n = parts.length; n >= 0; n--) {
    const key = n === 0 ? host : `${host}/${parts.slice(0, n).join('/')}`;
    const hit = entries.find((e) => e.key === key);
    if (hit) return hit.credentials;
  }
  return undefined;
}

/** Looks up credentials for `registry/repository` in the standard auth files. */
export function lookupCredentials(registry: string, repository: string, lookup: AuthLookupEnv = {}): Credentials | undefined {
  for (const file of authFilePaths(lookup)) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw new AuthFileError(file, (e as Error).message);
    }
    if (text.length > 16 << 20) throw new AuthFileError(file, 'larger than 16 MiB');
    const hit = matchAuthEntry(parseAuthFile(text, file), registry, repository);
    if (hit) return hit;
  }
  return undefined;
}
