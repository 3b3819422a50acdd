/**
 * `docker://` sources: a client for the OCI distribution API (registry v2) on Node's http/https.
 *
 * Transport: HTTPS with certificate verification by default (`ca` adds trust anchors). Plain HTTP is
 * used only when the caller allows it — `insecure: true` (or `tlsVerify: false`, which also accepts any
 * certificate) — or automatically for loopback registries (`localhost`, 127.0.0.0/8, ::1). In both
 * cases HTTPS is tried first and HTTP is used only if the server does not speak TLS; a certificate that
 * fails verification is never a reason to downgrade.
 *
 * Auth: the `/v2/` ping learns the challenge. `Bearer realm=…,service=…[,scope=…]` → a token from the
 * realm for scope `repository:NAME:pull` (anonymous, or with Basic credentials / an identity token);
 * `Basic` → credentials sent directly. Credentials come from `options.credentials` or the auth files
 * (auth.ts). A 401 on a later request (expired token) re-authenticates once.
 *
 * Robustness: redirects are followed (at most 10; the Authorization header is dropped as soon as the
 * host changes, so registry credentials never reach blob storage); connection errors, 429 and 5xx are
 * retried with exponential backoff, honouring Retry-After, bounded by attempts and total time; a blob
 * whose connection drops mid-body resumes with a Range request (or skips what it already has when the
 * server ignores the range) so one hash covers the whole blob. Every manifest and blob is verified
 * against its digest and size while streaming (see digest.ts).
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { IncomingMessage } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { BootcfsError } from '../errors.js';
import { DigestMismatchError, digestOf, parseDigest, verifyBuffer } from './digest.js';
import { lookupCredentials, type AuthLookupEnv, type Credentials } from './auth.js';
import { DOCKER_HUB, DOCKER_HUB_API_HOST, type DockerReference } from './reference.js';
import { BaseImageSource } from './source.js';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, MediaTypes, type OciDescriptor, type Platform } from './types.js';

export class RegistryError extends BootcfsError {
  readonly status: number | undefined;
  readonly url: string;
  constructor(message: string, url: string, status?: number, options?: { cause?: unknown }) {
    super(status === 404 ? 'ENOENT' : status === 401 || status === 403 ? 'EINVAL' : 'EIO', message, options);
    this.name = 'RegistryError';
    this.status = status;
    this.url = url;
  }
}

export interface RetryOptions {
  /** total attempts per operation, including the first (default 6) */
  maxAttempts?: number;
  /** give up when the next wait would end later than this after the first attempt (default 60 s) */
  maxTotalMs?: number;
  /** first backoff delay, doubled per attempt (default 200 ms) */
  baseDelayMs?: number;
  /** longest single wait, also caps Retry-After (default 10 s) */
  maxDelayMs?: number;
}

export interface RegistryOptions {
  /** verify TLS certificates (default true); false also permits plain HTTP */
  tlsVerify?: boolean;
  /** permit plain HTTP for this registry (HTTPS is still tried first) */
  insecure?: boolean;
  /** extra CA certificates (PEM) trusted for this registry and its token realm */
  ca?: string | Buffer | Array<string | Buffer>;
  /** explicit credentials; otherwise looked up in the auth files */
  credentials?: Credentials;
  /** environment for the auth-file lookup (tests) */
  authLookup?: AuthLookupEnv;
  retry?: RetryOptions;
  /** idle timeout of a request or response body (default 30 s) */
  timeoutMs?: number;
  platform?: Platform | undefined;
  userAgent?: string;
}

const MAX_REDIRECTS = 10;
const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const RETRYABLE_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'ECONNABORTED', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH', 'ERR_STREAM_PREMATURE_CLOSE']);

/** Transient failure: retried by RetryBudget. */
class TransientError extends Error {
  constructor(message: string, readonly retryAfterMs?: number, options?: { cause?: unknown }) {
    super(message, options);
  }
}

function isTransientNetworkError(e: unknown): boolean {
  if (e instanceof TransientError) return true;
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code !== undefined && RETRYABLE_CODES.has(code)) return true;
  const msg = (e as Error | undefined)?.message ?? '';
  return msg === 'aborted' || msg === 'socket hang up';
}

/** Parses Retry-After (delta seconds or HTTP date) into milliseconds. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^[0-9]+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/** Attempts and time for one operation; `wait` sleeps or throws the final error. */
export class RetryBudget {
  private attempts = 0;
  private readonly start = Date.now();
  private readonly maxAttempts: number;
  private readonly maxTotalMs: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;

  constructor(options: RetryOptions = {}, private readonly what: string, private readonly url: string) {
    this.maxAttempts = options.maxAttempts ?? 6;
    this.maxTotalMs = options.maxTotalMs ?? 60_000;
    this.baseDelayMs = options.baseDelayMs ?? 200;
    this.maxDelayMs = options.maxDelayMs ?? 10_000;
  }

  async wait(cause: unknown, retryAfterMs?: number): Promise<void> {
    this.attempts++;
    const backoff = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (this.attempts - 1));
    const delay = Math.min(this.maxDelayMs, Math.max(backoff, retryAfterMs ?? 0));
    const elapsed = Date.now() - this.start;
    if (this.attempts >= this.maxAttempts || elapsed + delay > this.maxTotalMs) {
      const why = (cause as Error | undefined)?.message ?? String(cause);
      throw new RegistryError(
        `${this.what}: giving up after ${this.attempts} attempt${this.attempts === 1 ? '' : 's'} in ${elapsed} ms: ${why}`,
        this.url,
        (cause as { status?: number }).status,
        { cause },
      );
    }
    await sleep(delay);
  }
}

/** One challenge from WWW-Authenticate. */
export interface AuthChallenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses WWW-Authenticate header values (several challenges may share one header). */
export function parseWwwAuthenticate(values: string[]): AuthChallenge[] {
  const out: AuthChallenge[] = [];
  for (const value of values) {
    const re = /\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?:\s+|$)((?:\s*,?\s*[A-Za-z0-9_.-]+\s*=\s*(?:"(?:[^"\\]|\\.)*"|[^,\s]*))*)\s*,?/gy;
    let m: RegExpExecArray | null;
    let lastIndex = 0;
    while ((m = re.exec(value)) !== null && m[0] !== '') {
      lastIndex = re.lastIndex;
      const params: Record<string, string> = {};
      const pre = /([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)/g;
      let p: RegExpExecArray | null;
      while ((p = pre.exec(m[2] ?? '')) !== null) {
        const raw = p[2]!;
        params[p[1]!.toLowerCase()] = raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw;
      }
      out.push({ scheme: m[1]!.toLowerCase(), params });
      if (lastIndex >= value.length) break;
    }
  }
  return out;
}

function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h === '::1') return true;
  return net.isIPv4(h) && h.startsWith('127.');
}

function isTlsProtocolMismatch(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code ?? '';
  return code === 'EPROTO' || code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number|packet length too long/i.test((e as Error)?.message ?? '');
}

function headerValues(res: IncomingMessage, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < res.rawHeaders.length; i += 2) {
    if (res.rawHeaders[i]!.toLowerCase() === name) out.push(res.rawHeaders[i + 1]!);
  }
  return out;
}

async function readBody(res: IncomingMessage, limit: number, what: string, url: string): Promise<Buffer> {
  const declared = res.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    res.destroy();
    throw new RegistryError(`${what} is ${declared} bytes, above the limit of ${limit}`, url, res.statusCode);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      res.destroy();
      throw new RegistryError(`${what} is larger than the limit of ${limit} bytes`, url, res.statusCode);
    }
    chunks.push(chunk);
  }
  if (!res.complete) throw new TransientError(`${what}: connection closed before the end of the response`);
  return Buffer.concat(chunks, total);
}

async function errorMessage(res: IncomingMessage): Promise<string> {
  try {
    const body = await readBody(res, 64 * 1024, 'error body', '');
    const doc = JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: string; message?: string }> };
    const e = doc.errors?.[0];
    if (e) return `${e.code ?? ''}${e.message ? `: ${e.message}` : ''}`;
    return body.toString('utf8').slice(0, 200);
  } catch {
    return '';
  }
}

/** A request body that can be produced again for a retry. */
type BodyFactory = () => Uint8Array | AsyncIterable<Uint8Array>;

interface RequestOptions {
  method?: 'GET' | 'HEAD' | 'POST' | 'PUT';
  headers?: Record<string, string>;
  what: string;
  /** absolute URL (upload locations) instead of a path under the API base */
  url?: URL;
  body?: BodyFactory;
  /** needs push access (token scope `pull,push`) */
  push?: boolean;
}

/** A client for one registry host. */
export class RegistryClient {
  /** the name used in references and auth files (`docker.io`, `host:port`) */
  readonly registry: string;
  private readonly apiHost: string;
  private readonly options: RegistryOptions;
  private readonly tlsVerify: boolean;
  private readonly allowHttp: boolean;
  private baseUrl: string | undefined;
  private pingPromise: Promise<void> | undefined;
  private challenge: AuthChallenge | undefined;
  private readonly tokens = new Map<string, string>();
  private readonly httpsAgent: https.Agent;
  private readonly httpAgent: http.Agent;

  constructor(registry: string, options: RegistryOptions = {}) {
    this.registry = registry;
    this.apiHost = registry === DOCKER_HUB ? DOCKER_HUB_API_HOST : registry;
    this.options = options;
    this.tlsVerify = options.tlsVerify ?? true;
    const hostname = new URL(`http://${this.apiHost}`).hostname;
    this.allowHttp = options.insecure === true || !this.tlsVerify || isLoopbackHost(hostname);
    const agentOptions: https.AgentOptions = { keepAlive: true, maxSockets: 8, rejectUnauthorized: this.tlsVerify };
    if (options.ca !== undefined) agentOptions.ca = options.ca;
    this.httpsAgent = new https.Agent(agentOptions);
    this.httpAgent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  }

  close(): void {
    this.httpsAgent.destroy();
    this.httpAgent.destroy();
  }

  /** The scheme chosen by the ping: `https:` or `http:`. */
  get scheme(): string | undefined {
    return this.baseUrl === undefined ? undefined : new URL(this.baseUrl).protocol;
  }

  private credentialsFor(repository: string): Credentials | undefined {
    return this.options.credentials ?? lookupCredentials(this.registry, repository, this.options.authLookup);
  }

  /** One HTTP exchange, no redirects/auth/retries. Resolves with the response head. */
  private rawRequest(url: URL, method: string, headers: Record<string, string>, body?: BodyFactory): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const isHttps = url.protocol === 'https:';
      const mod = isHttps ? https : http;
      const req = mod.request(
        url,
        {
          method,
          headers: { 'User-Agent': this.options.userAgent ?? 'bootcfs', ...headers },
          agent: isHttps ? this.httpsAgent : this.httpAgent,
        },
        resolve,
      );
      const timeout = this.options.timeoutMs ?? 30_000;
      req.setTimeout(timeout, () => {
        const err = new Error(`no data for ${timeout} ms`) as NodeJS.ErrnoException;
        err.code = 'ETIMEDOUT';
        req.destroy(err);
      });
      req.on('error', reject);
      if (body === undefined) {
        req.end();
        return;
      }
      const data = body();
      if (data instanceof Uint8Array) {
        req.end(data);
        return;
      }
      (async () => {
        for await (const chunk of data) {
          if (!req.write(chunk)) await new Promise<void>((r) => req.once('drain', () => r()));
        }
        req.end();
      })().catch((e: unknown) => req.destroy(e as Error));
    });
  }

  /** Follows redirects; drops Authorization once the host (or scheme/port) changes. */
  private async requestFollowing(url: URL, method: string, headers: Record<string, string>, body?: BodyFactory): Promise<{ res: IncomingMessage; url: URL }> {
    let current = url;
    let hdrs = headers;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const res = await this.rawRequest(current, method, hdrs, body);
      const status = res.statusCode ?? 0;
      if (![301, 302, 303, 307, 308].includes(status)) return { res, url: current };
      const location = res.headers.location;
      res.resume();
      if (!location) throw new RegistryError(`redirect without Location from ${current.href}`, current.href, status);
      const next = new URL(location, current);
      if (next.protocol !== 'https:' && next.protocol !== 'http:') {
        throw new RegistryError(`redirect to unsupported URL ${next.href}`, current.href, status);
      }
      if (next.protocol === 'http:' && current.protocol === 'https:' && !this.allowHttp) {
        throw new RegistryError(`refusing redirect from HTTPS to plain HTTP (${next.href})`, current.href, status);
      }
      if (next.origin !== current.origin && hdrs.Authorization !== undefined) {
        const { Authorization: _dropped, ...rest } = hdrs;
        hdrs = rest;
      }
      current = next;
    }
    throw new RegistryError(`more than ${MAX_REDIRECTS} redirects`, url.href);
  }

  /** `/v2/` ping: picks the scheme and records the auth challenge. */
  ping(): Promise<void> {
    this.pingPromise ??= this.doPing().catch((e) => {
      this.pingPromise = undefined;
      throw e;
    });
    return this.pingPromise;
  }

  private async doPing(): Promise<void> {
    const budget = new RetryBudget(this.options.retry, `ping ${this.registry}`, `https://${this.apiHost}/v2/`);
    const schemes = this.allowHttp ? ['https', 'http'] : ['https'];
    for (;;) {
      let lastError: unknown;
      for (const scheme of schemes) {
        const url = new URL(`${scheme}://${this.apiHost}/v2/`);
        try {
          const { res } = await this.requestFollowing(url, 'GET', {});
          const status = res.statusCode ?? 0;
          if (RETRYABLE_STATUS.has(status)) {
            res.resume();
            throw new TransientError(`HTTP ${status} from ${url.href}`, parseRetryAfter(res.headers['retry-after']));
          }
          if (status === 200 || status === 401) {
            const challenges = parseWwwAuthenticate(headerValues(res, 'www-authenticate'));
            res.resume();
            this.baseUrl = `${scheme}://${this.apiHost}`;
            this.challenge = challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic');
            if (status === 401 && this.challenge === undefined) {
              throw new RegistryError(`registry ${this.registry} requires authentication but sent no usable challenge`, url.href, 401);
            }
            return;
          }
          const msg = await errorMessage(res);
          throw new RegistryError(`${url.href} is not a registry v2 endpoint: HTTP ${status}${msg ? ` ${msg}` : ''}`, url.href, status);
        } catch (e) {
          if (scheme === 'https' && schemes.length > 1 && isTlsProtocolMismatch(e)) {
            lastError = e;
            continue;
          }
          if (!isTransientNetworkError(e)) {
            if (e instanceof BootcfsError) throw e;
            throw new RegistryError(`cannot reach ${url.href}: ${(e as Error).message}`, url.href, undefined, { cause: e });
          }
          lastError = e;
          break;
        }
      }
      await budget.wait(lastError, (lastError as TransientError).retryAfterMs);
    }
  }

  private scopeKey(repository: string, push = false): string {
    return `repository:${repository}:${push ? 'pull,push' : 'pull'}`;
  }

  private async authorize(repository: string, push = false): Promise<string | undefined> {
    const challenge = this.challenge;
    if (!challenge) return undefined;
    const creds = this.credentialsFor(repository);
    if (challenge.scheme === 'basic') {
      if (!creds) {
        throw new RegistryError(`registry ${this.registry} requires credentials (Basic auth) and none were found`, this.baseUrl ?? '', 401);
      }
      return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    }
    const scope = this.scopeKey(repository, push);
    const cached = this.tokens.get(scope);
    if (cached) return `Bearer ${cached}`;
    const token = await this.fetchToken(challenge, scope, creds);
    this.tokens.set(scope, token);
    return `Bearer ${token}`;
  }

  private async fetchToken(challenge: AuthChallenge, scope: string, creds: Credentials | undefined): Promise<string> {
    const realm = challenge.params.realm;
    if (!realm) throw new RegistryError(`Bearer challenge from ${this.registry} has no realm`, this.baseUrl ?? '', 401);
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new RegistryError(`Bearer realm '${realm}' is not a URL`, this.baseUrl ?? '', 401);
    }
    if (url.protocol === 'http:' && !this.allowHttp) {
      throw new RegistryError(`refusing plain-HTTP token realm ${realm} for an HTTPS registry`, realm, 401);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new RegistryError(`unsupported token realm ${realm}`, realm, 401);
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    url.searchParams.append('scope', scope);
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (creds && creds.identityToken === undefined) {
      headers.Authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    } else if (creds?.identityToken !== undefined) {
      // Docker's identity token is an OAuth2 refresh token; the token endpoint accepts it via
      // Basic with the `<token>` user convention used by docker's credential helpers.
      headers.Authorization = `Basic ${Buffer.from(`<token>:${creds.identityToken}`).toString('base64')}`;
    }
    const budget = new RetryBudget(this.options.retry, `token from ${url.origin}`, url.href);
    for (;;) {
      try {
        const { res } = await this.requestFollowing(url, 'GET', headers);
        const status = res.statusCode ?? 0;
        if (RETRYABLE_STATUS.has(status)) {
          res.resume();
          throw new TransientError(`HTTP ${status} from token endpoint`, parseRetryAfter(res.headers['retry-after']));
        }
        if (status !== 200) {
          const msg = await errorMessage(res);
          throw new RegistryError(`token request to ${url.origin} failed: HTTP ${status}${msg ? ` ${msg}` : ''}`, url.href, status);
        }
        const body = await readBody(res, 1 << 20, 'token response', url.href);
        let doc: { token?: unknown; access_token?: unknown };
        try {
          doc = JSON.parse(body.toString('utf8')) as typeof doc;
        } catch {
          throw new RegistryError('token response is not JSON', url.href, status);
        }
        const token = typeof doc?.token === 'string' && doc.token ? doc.token : typeof doc?.access_token === 'string' ? doc.access_token : '';
        if (!token) throw new RegistryError('token response has no token', url.href, status);
        return token;
      } catch (e) {
        if (!isTransientNetworkError(e)) throw e;
        await budget.wait(e, (e as TransientError).retryAfterMs);
      }
    }
  }

  /**
   * GET with auth; returns a 2xx response. Non-transient HTTP errors throw RegistryError; transient
   * ones throw TransientError (the caller owns the retry budget, so blob resumes can share it).
   */
  private async get(repository: string, path: string, opts: RequestOptions): Promise<IncomingMessage> {
    await this.ping();
    const url = opts.url ?? new URL(`${this.baseUrl}${path}`);
    let reauthenticated = false;
    for (;;) {
      const headers: Record<string, string> = { ...opts.headers };
      const auth = await this.authorize(repository, opts.push);
      if (auth) headers.Authorization = auth;
      const { res, url: finalUrl } = await this.requestFollowing(url, opts.method ?? 'GET', headers, opts.body);
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) return res;
      if (status === 401 && !reauthenticated) {
        // An expired token, a token without this scope, or a registry whose ping was anonymous but
        // whose repositories are not: take the challenge of this response and authenticate once more.
        const challenges = parseWwwAuthenticate(headerValues(res, 'www-authenticate'));
        const fresh = challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic');
        res.resume();
        if (fresh) {
          this.challenge = fresh;
          this.tokens.delete(this.scopeKey(repository, opts.push));
          reauthenticated = true;
          continue;
        }
        throw new RegistryError(`${opts.what}: HTTP 401 without a usable WWW-Authenticate challenge`, finalUrl.href, 401);
      }
      if (RETRYABLE_STATUS.has(status)) {
        res.resume();
        const err = new TransientError(`HTTP ${status} for ${opts.what}`, parseRetryAfter(res.headers['retry-after'])) as TransientError & { status: number };
        err.status = status;
        throw err;
      }
      const msg = await errorMessage(res);
      throw new RegistryError(`${opts.what}: HTTP ${status}${msg ? ` ${msg}` : ''} (${finalUrl.href})`, finalUrl.href, status);
    }
  }

  /**
   * Fetches a manifest or index by tag or digest: exact bytes, their digest and the served media type.
   * A digest reference is verified; for a tag, a sha256 `Docker-Content-Digest` header is cross-checked.
   */
  async getManifest(repository: string, reference: string, accept = MANIFEST_ACCEPT): Promise<{ bytes: Buffer; digest: string; mediaType: string | undefined }> {
    const byDigest = reference.includes(':');
    const algorithm = byDigest ? parseDigest(reference).algorithm : 'sha256';
    const path = `/v2/${repository}/manifests/${reference}`;
    const what = `manifest ${repository}:${reference}`;
    const budget = new RetryBudget(this.options.retry, what, path);
    for (;;) {
      try {
        const res = await this.get(repository, path, { headers: { Accept: accept }, what });
        const bytes = await readBody(res, MAX_MANIFEST_BYTES, what, path);
        const digest = digestOf(bytes, algorithm);
        if (byDigest) verifyBuffer(bytes, { digest: reference }, what);
        const served = res.headers['docker-content-digest'];
        if (!byDigest && typeof served === 'string' && served.startsWith('sha256:') && served !== digest) {
          throw new DigestMismatchError(what, served, digest);
        }
        const contentType = res.headers['content-type']?.split(';')[0]?.trim();
        return { bytes, digest, mediaType: contentType };
      } catch (e) {
        if (!isTransientNetworkError(e)) throw e;
        await budget.wait(e, (e as TransientError).retryAfterMs);
      }
    }
  }

  /**
   * Streams a blob, resuming after dropped connections. Unverified: callers wrap it with verifyStream
   * (RegistrySource.openBlob does).
   */
  async *blob(repository: string, descriptor: OciDescriptor): AsyncGenerator<Uint8Array> {
    parseDigest(descriptor.digest);
    const path = `/v2/${repository}/blobs/${descriptor.digest}`;
    const what = `blob ${descriptor.digest}`;
    const budget = new RetryBudget(this.options.retry, what, path);
    let received = 0;
    for (;;) {
      let res: IncomingMessage | undefined;
      try {
        const headers: Record<string, string> = {};
        if (received > 0) headers.Range = `bytes=${received}-`;
        res = await this.get(repository, path, { headers, what });
        let skip = 0;
        if (received > 0) {
          const range = /^bytes ([0-9]+)-/.exec(String(res.headers['content-range'] ?? ''));
          if (res.statusCode === 206 && range && Number(range[1]) === received) skip = 0;
          else if (res.statusCode === 200) skip = received; // range ignored: drop what we already have
          else throw new RegistryError(`${what}: unusable response to a range request (HTTP ${res.statusCode})`, path, res.statusCode);
        }
        for await (const raw of res as AsyncIterable<Buffer>) {
          let chunk = raw;
          if (skip > 0) {
            const n = Math.min(skip, chunk.length);
            skip -= n;
            chunk = chunk.subarray(n);
            if (chunk.length === 0) continue;
          }
          received += chunk.length;
          yield chunk;
        }
        if (!res.complete) throw new TransientError(`${what}: connection closed after ${received} bytes`);
        return;
      } catch (e) {
        if (!isTransientNetworkError(e)) throw e;
        await budget.wait(e, (e as TransientError).retryAfterMs);
      } finally {
        res?.destroy();
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // push (distribution spec: monolithic blob upload, manifest PUT)

  /** Runs one request with the shared retry policy for transient failures. */
  private async withRetry<T>(what: string, url: string, fn: () => Promise<T>): Promise<T> {
    const budget = new RetryBudget(this.options.retry, what, url);
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        if (!isTransientNetworkError(e)) throw e;
        await budget.wait(e, (e as TransientError).retryAfterMs);
      }
    }
  }

  /** true if the repository already has the blob (HEAD /v2/<name>/blobs/<digest>). */
  async hasBlob(repository: string, digest: string, push = false): Promise<boolean> {
    parseDigest(digest);
    const path = `/v2/${repository}/blobs/${digest}`;
    return this.withRetry(`HEAD blob ${digest}`, path, async () => {
      try {
        const res = await this.get(repository, path, { method: 'HEAD', what: `blob ${digest}`, push });
        res.resume();
        return true;
      } catch (e) {
        if (e instanceof RegistryError && e.status === 404) return false;
        throw e;
      }
    });
  }

  /**
   * Uploads a blob unless the repository has it: POST an upload session, then one PUT with the whole
   * content and its digest (the registry verifies it). `body` is called again for a retry.
   */
  async pushBlob(repository: string, descriptor: Pick<OciDescriptor, 'digest' | 'size'>, body: BodyFactory): Promise<'uploaded' | 'exists'> {
    if (await this.hasBlob(repository, descriptor.digest, true)) return 'exists';
    const what = `upload of blob ${descriptor.digest}`;
    const start = `/v2/${repository}/blobs/uploads/`;
    await this.withRetry(what, start, async () => {
      const res = await this.get(repository, start, { method: 'POST', what, push: true, headers: { 'Content-Length': '0' } });
      res.resume();
      const location = res.headers.location;
      if (!location) throw new RegistryError(`${what}: the registry gave no upload location`, start, res.statusCode);
      const url = new URL(location, this.baseUrl);
      url.searchParams.set('digest', descriptor.digest);
      const put = await this.get(repository, '', {
        method: 'PUT', url, what, push: true, body,
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(descriptor.size) },
      });
      put.resume();
    });
    return 'uploaded';
  }

  /** PUT /v2/<name>/manifests/<reference>; returns the digest the registry reports (or ours). */
  async putManifest(repository: string, reference: string, bytes: Buffer, mediaType: string): Promise<string> {
    const path = `/v2/${repository}/manifests/${reference}`;
    const what = `manifest upload ${repository}:${reference}`;
    return this.withRetry(what, path, async () => {
      const res = await this.get(repository, path, {
        method: 'PUT', what, push: true, body: () => bytes,
        headers: { 'Content-Type': mediaType, 'Content-Length': String(bytes.length) },
      });
      res.resume();
      const d = res.headers['docker-content-digest'];
      return typeof d === 'string' ? d : digestOf(bytes);
    });
  }
}

const MANIFEST_MEDIA_TYPES = new Set<string>([MediaTypes.ociManifest, MediaTypes.ociIndex, MediaTypes.dockerManifest, MediaTypes.dockerManifestList]);

/** `docker://` image source. */
export class RegistrySource extends BaseImageSource {
  readonly client: RegistryClient;
  private readonly ref: DockerReference;

  constructor(reference: DockerReference, options: RegistryOptions = {}) {
    super(reference, options.platform);
    this.ref = reference;
    this.client = new RegistryClient(reference.registry, options);
  }

  protected override rawBlob(descriptor: OciDescriptor): AsyncIterable<Uint8Array> {
    if (MANIFEST_MEDIA_TYPES.has(descriptor.mediaType)) {
      // Manifests referenced from an index live under /manifests/, not /blobs/.
      const client = this.client;
      const repo = this.ref.repository;
      return (async function* () {
        const { bytes } = await client.getManifest(repo, descriptor.digest);
        yield bytes;
      })();
    }
    return this.client.blob(this.ref.repository, descriptor);
  }

  protected override async rootDescriptor(): Promise<{ descriptor?: OciDescriptor; bytes: Buffer; mediaType?: string }> {
    const reference = this.ref.digest ?? this.ref.tag ?? 'latest';
    const { bytes, digest, mediaType } = await this.client.getManifest(this.ref.repository, reference);
    const result: { descriptor?: OciDescriptor; bytes: Buffer; mediaType?: string } = { bytes };
    if (mediaType !== undefined) result.mediaType = mediaType;
    if (this.ref.digest !== undefined) result.descriptor = { mediaType: mediaType ?? '', digest, size: bytes.length };
    return result;
  }

  override async close(): Promise<void> {
    this.client.close();
  }
}
