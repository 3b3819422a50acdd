/**
 * Starts Debian's `docker-registry` (CNCF distribution) on 127.0.0.1 for tests: plain HTTP, or TLS
 * with a throwaway CA and htpasswd (bcrypt) auth. Storage lives in a temp dir removed by stop().
 *
 *   const reg = await startRegistry({ tls: true, auth: { username: 'u', password: 'p' } });
 *   try { ... `skopeo copy ... docker://${reg.host}/name:tag --dest-cert-dir ${reg.certDir}` ... }
 *   finally { await reg.stop(); }
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { requireTool, run } from './ref.js';

export const DOCKER_REGISTRY = '/usr/bin/docker-registry';
export const SKOPEO = '/usr/bin/skopeo';
export const HTPASSWD = '/usr/bin/htpasswd';
export const OPENSSL = '/usr/bin/openssl';

export interface RegistryServer {
  /** `127.0.0.1:PORT` */
  host: string;
  port: number;
  tls: boolean;
  /** PEM of the CA that signed the server certificate (TLS only) */
  ca?: Buffer;
  /** directory holding `ca.crt`, for `skopeo --dest-cert-dir/--src-cert-dir` (TLS only) */
  certDir?: string;
  username?: string;
  password?: string;
  /** temp directory with config, storage and logs */
  dir: string;
  /** registry log so far (for failure messages) */
  log(): string;
  stop(): Promise<void>;
}

export interface StartRegistryOptions {
  tls?: boolean;
  auth?: { username: string; password: string };
}

/** A free TCP port on 127.0.0.1 (the OS picks it; a tiny race with other processes is retried by the caller). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

function makeCerts(dir: string): { caPem: Buffer; certFile: string; keyFile: string; certDir: string } {
  const openssl = requireTool(OPENSSL);
  const p = (n: string): string => path.join(dir, n);
  const must = (args: string[]): void => {
    const r = run(openssl, args, { cwd: dir });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.stderr.toString()}`);
  };
  must(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '2', '-subj', '/CN=bootcfs test CA']);
  must(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=127.0.0.1']);
  writeFileSync(p('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n');
  must(['x509', '-req', '-in', p('server.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-out', p('server.pem'), '-days', '2', '-extfile', p('ext.cnf')]);
  const certDir = p('certs.d');
  mkdirSync(certDir);
  const caPem = readFileSync(p('ca.pem'));
  writeFileSync(path.join(certDir, 'ca.crt'), caPem);
  return { caPem, certFile: p('server.pem'), keyFile: p('server.key'), certDir };
}

async function waitReady(port: number, tls: boolean, ca: Buffer | undefined, proc: ChildProcess, deadlineMs: number): Promise<void> {
  const start = Date.now();
  while (Date.now() - start < deadlineMs) {
    if (proc.exitCode !== null) throw new Error(`docker-registry exited with ${proc.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const mod = tls ? https : http;
      const req = mod.get({ host: '127.0.0.1', port, path: '/v2/', ca, timeout: 1000 }, (res) => {
        res.resume();
        resolve(res.statusCode === 200 || res.statusCode === 401);
      });
      req.on('error', () => resolve(false));
      req.on('timeout', () => req.destroy());
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`docker-registry did not become ready within ${deadlineMs} ms`);
}

export async function startRegistry(options: StartRegistryOptions = {}): Promise<RegistryServer> {
  requireTool(DOCKER_REGISTRY);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bootcfs-registry-'));
  try {
    const tls = options.tls === true;
    const certs = tls ? makeCerts(dir) : undefined;
    let authYaml = '';
    if (options.auth) {
      const r = run(requireTool(HTPASSWD), ['-Bbn', options.auth.username, options.auth.password]);
      if (r.status !== 0) throw new Error(`htpasswd failed: ${r.stderr.toString()}`);
      writeFileSync(path.join(dir, 'htpasswd'), r.stdout);
      authYaml = `auth:\n  htpasswd:\n    realm: bootcfs-test\n    path: ${path.join(dir, 'htpasswd')}\n`;
    }
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const config =
        'version: 0.1\n' +
        'log:\n  level: error\n  accesslog:\n    disabled: true\n' +
        `storage:\n  filesystem:\n    rootdirectory: ${path.join(dir, 'storage')}\n  delete:\n    enabled: true\n` +
        `http:\n  addr: 127.0.0.1:${port}\n` +
        (certs ? `  tls:\n    certificate: ${certs.certFile}\n    key: ${certs.keyFile}\n` : '') +
        authYaml;
      const configFile = path.join(dir, 'config.yml');
      writeFileSync(configFile, config);
      let log = '';
      const proc = spawn(DOCKER_REGISTRY, ['serve', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
      proc.stdout!.on('data', (d: Buffer) => (log += d.toString()));
      proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
      const stop = async (): Promise<void> => {
        if (proc.exitCode === null && proc.signalCode === null) {
          const exited = new Promise<void>((r) => proc.once('exit', () => r()));
          proc.kill('SIGTERM');
          const timer = setTimeout(() => proc.kill('SIGKILL'), 3000);
          await exited;
          clearTimeout(timer);
        }
        rmSync(dir, { recursive: true, force: true });
      };
      try {
        await waitReady(port, tls, certs?.caPem, proc, 15_000);
      } catch (e) {
        if (proc.exitCode === null) {
          proc.kill('SIGKILL');
          await new Promise((r) => proc.once('exit', r));
        }
        if (attempt === 2) throw new Error(`${(e as Error).message}\n${log}`);
        continue;
      }
      const server: RegistryServer = { host: `127.0.0.1:${port}`, port, tls, dir, log: () => log, stop };
      if (certs) {
        server.ca = certs.caPem;
        server.certDir = certs.certDir;
      }
      if (options.auth) {
        server.username = options.auth.username;
        server.password = options.auth.password;
      }
      return server;
    }
    throw new Error('unreachable');
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

/** `skopeo copy` with the flags tests need; throws with skopeo's stderr on failure. */
export function skopeoCopy(src: string, dest: string, extra: string[] = []): void {
  const r = run(requireTool(SKOPEO), ['--insecure-policy', 'copy', '-q', ...extra, src, dest]);
  if (r.status !== 0) throw new Error(`skopeo copy ${src} ${dest} failed: ${r.stderr.toString()}`);
}

/** `skopeo inspect --raw` bytes of an image. */
export function skopeoInspectRaw(ref: string, extra: string[] = []): Buffer {
  const r = run(requireTool(SKOPEO), ['--insecure-policy', 'inspect', '--raw', ...extra, ref]);
  if (r.status !== 0) throw new Error(`skopeo inspect --raw ${ref} failed: ${r.stderr.toString()}`);
  return r.stdout;
}

/** `skopeo inspect --format {{.Digest}}` of an image. */
export function skopeoDigest(ref: string, extra: string[] = []): string {
  const r = run(requireTool(SKOPEO), ['--insecure-policy', 'inspect', '--format', '{{.Digest}}', ...extra, ref]);
  if (r.status !== 0) throw new Error(`skopeo inspect ${ref} failed: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
}
