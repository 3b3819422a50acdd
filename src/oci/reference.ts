/**
 * Image references in the containers-image transport syntax:
 *
 *   oci:DIR[:TAG]                  OCI image layout directory (TAG = org.opencontainers.image.ref.name)
 *   oci-archive:FILE[:TAG]         tar archive of an OCI image layout
 *   docker-archive:FILE[:NAME:TAG] `docker save` archive; `@N` selects the N-th image instead
 *   docker://[HOST[:PORT]/]NAME[:TAG][@DIGEST]
 *
 * As in containers/image, the path of the three file transports ends at the first ':' (paths containing
 * ':' cannot be named). Docker references are normalised like the docker CLI does: a first component
 * without '.' or ':' that is not `localhost` is a Docker Hub repository (`docker.io`, `library/` added
 * to single-component names); no tag and no digest means `:latest`; a digest wins over a tag.
 */
import { BootcfsError } from '../errors.js';
import { parseDigest } from './digest.js';

export class ImageReferenceError extends BootcfsError {
  readonly reference: string;
  constructor(reference: string, why: string) {
    const shown = reference.length > 200 ? `${reference.slice(0, 200)}…` : reference;
    super('EINVAL', `invalid image reference '${shown.replace(/[^\x20-\x7e]/g, '?')}': ${why}`);
    this.name = 'ImageReferenceError';
    this.reference = reference;
  }
}

export interface OciLayoutReference {
  transport: 'oci';
  path: string;
  tag?: string;
}
export interface OciArchiveReference {
  transport: 'oci-archive';
  path: string;
  tag?: string;
}
export interface DockerArchiveReference {
  transport: 'docker-archive';
  path: string;
  /** `name:tag` as listed in the archive's RepoTags */
  name?: string;
  /** `@N`: 0-based position in manifest.json */
  index?: number;
}
export interface DockerReference {
  transport: 'docker';
  /** registry as written in the name after normalisation: `docker.io`, `localhost:5000`, `[::1]:5000` */
  registry: string;
  /** repository path inside the registry, e.g. `library/busybox` */
  repository: string;
  /** always set when `digest` is not (defaults to `latest`) */
  tag?: string;
  digest?: string;
}
export type ImageReference = OciLayoutReference | OciArchiveReference | DockerArchiveReference | DockerReference;

export const DOCKER_HUB = 'docker.io';
/** The Docker Hub API lives on a different host than its name (docker.io). */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DOMAIN_LABEL = /^(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])$/;
const MAX_NAME_LENGTH = 255;

function validateTag(ref: string, tag: string): void {
  if (!TAG.test(tag)) throw new ImageReferenceError(ref, `invalid tag '${tag}'`);
}

function validateHost(ref: string, host: string): void {
  let rest = host;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0 || !/^[0-9A-Fa-f:.]+$/.test(rest.slice(1, close))) {
      throw new ImageReferenceError(ref, `invalid IPv6 registry host '${host}'`);
    }
    rest = rest.slice(close + 1);
    if (rest !== '' && !/^:[0-9]+$/.test(rest)) throw new ImageReferenceError(ref, `invalid port in '${host}'`);
  } else {
    const colon = rest.indexOf(':');
    const name = colon < 0 ? rest : rest.slice(0, colon);
    if (colon >= 0 && !/^[0-9]+$/.test(rest.slice(colon + 1))) {
      throw new ImageReferenceError(ref, `invalid port in '${host}'`);
    }
    if (name === '' || !name.split('.').every((l) => DOMAIN_LABEL.test(l))) {
      throw new ImageReferenceError(ref, `invalid registry host '${host}'`);
    }
  }
  const port = /:([0-9]+)$/.exec(host);
  if (port && (Number(port[1]) < 1 || Number(port[1]) > 65535)) {
    throw new ImageReferenceError(ref, `port out of range in '${host}'`);
  }
}

/** Parses the part after `docker://` (also usable for plain `NAME[:TAG][@DIGEST]` strings). */
export function parseDockerReference(name: string, original = name): DockerReference {
  if (name === '') throw new ImageReferenceError(original, 'empty image name');
  let rest = name;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      parseDigest(digest);
    } catch (e) {
      throw new ImageReferenceError(original, (e as Error).message);
    }
  }
  // The tag is after the last ':' that follows the last '/', so a registry port is not a tag.
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const tagColon = rest.indexOf(':', lastSlash + 1);
  if (tagColon >= 0) {
    tag = rest.slice(tagColon + 1);
    rest = rest.slice(0, tagColon);
    validateTag(original, tag);
  }
  if (rest.length > MAX_NAME_LENGTH) throw new ImageReferenceError(original, `name longer than ${MAX_NAME_LENGTH}`);
  const components = rest.split('/');
  let registry: string;
  const first = components[0]!;
  if (components.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))) {
    registry = first;
    components.shift();
    validateHost(original, registry);
  } else {
    registry = DOCKER_HUB;
  }
  if (registry === 'index.docker.io') registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && components.length === 1) components.unshift('library');
  for (const c of components) {
    if (!PATH_COMPONENT.test(c)) {
      throw new ImageReferenceError(original, `invalid repository name component '${c}' (lowercase letters, digits, separators)`);
    }
  }
  const result: DockerReference = { transport: 'docker', registry, repository: components.join('/') };
  if (digest !== undefined) result.digest = digest;
  else result.tag = tag ?? 'latest';
  // A `name:tag@digest` reference pins the digest; the tag is informational and kept for display.
  if (digest !== undefined && tag !== undefined) result.tag = tag;
  return result;
}

function splitPath(ref: string, body: string): [string, string | undefined] {
  const colon = body.indexOf(':');
  const path = colon < 0 ? body : body.slice(0, colon);
  const rest = colon < 0 ? undefined : body.slice(colon + 1);
  if (path === '') throw new ImageReferenceError(ref, 'empty path');
  if (path.includes('\0')) throw new ImageReferenceError(ref, 'NUL byte in path');
  return [path, rest];
}

export function parseImageReference(ref: string): ImageReference {
  if (typeof ref !== 'string') throw new ImageReferenceError(String(ref), 'not a string');
  const colon = ref.indexOf(':');
  if (colon < 0) throw new ImageReferenceError(ref, 'missing transport (oci:, oci-archive:, docker-archive:, docker://)');
  const transport = ref.slice(0, colon);
  const body = ref.slice(colon + 1);
  switch (transport) {
    case 'docker': {
      if (!body.startsWith('//')) throw new ImageReferenceError(ref, "docker transport needs 'docker://'");
      return parseDockerReference(body.slice(2), ref);
    }
    case 'oci':
    case 'oci-archive': {
      const [path, tag] = splitPath(ref, body);
      if (tag === undefined || tag === '') return { transport, path };
      // OCI ref.name annotations are free-form but tags with '/' or whitespace are never produced by
      // the tools and would be confusing on the command line.
      if (!/^[A-Za-z0-9_.:@+-][A-Za-z0-9_.:@+/-]*$/.test(tag) || tag.length > 255) {
        throw new ImageReferenceError(ref, `invalid tag '${tag}'`);
      }
      return { transport, path, tag };
    }
    case 'docker-archive': {
      const [path, rest] = splitPath(ref, body);
      if (rest === undefined || rest === '') return { transport, path };
      if (rest.startsWith('@')) {
        const n = rest.slice(1);
        if (!/^[0-9]{1,6}$/.test(n)) throw new ImageReferenceError(ref, `invalid image index '${rest}'`);
        return { transport, path, index: Number(n) };
      }
      const named = parseDockerReference(rest, ref);
      if (named.digest !== undefined) throw new ImageReferenceError(ref, 'docker-archive references cannot use a digest');
      return { transport, path, name: rest };
    }
    default:
      throw new ImageReferenceError(ref, `unknown transport '${transport}'`);
  }
}

/** Canonical string form (`docker://` references fully normalised). */
export function formatImageReference(ref: ImageReference): string {
  switch (ref.transport) {
    case 'oci':
    case 'oci-archive':
      return `${ref.transport}:${ref.path}${ref.tag !== undefined ? `:${ref.tag}` : ''}`;
    case 'docker-archive':
      return `docker-archive:${ref.path}${ref.name !== undefined ? `:${ref.name}` : ref.index !== undefined ? `:@${ref.index}` : ''}`;
    case 'docker':
      return `docker://${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
  }
}
