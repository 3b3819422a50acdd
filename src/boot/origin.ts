/**
 * The deployment origin file `state/deploy/<id>/<id>.origin` (bootc-composefs.md §2.2): INI with the
 * sections bootc reads and writes. Reader accepts optional spaces around `=`, `#`/`;` comments and keys
 * it does not know (kept in `extra`); the writer emits bootc's layout (`key = value`, a blank line between
 * sections).
 */
import { ParseError } from '../errors.js';

export type BootType = 'bls' | 'uki';

export interface DeploymentOrigin {
  /** `[origin] container-image-reference`, without the `ostree-unverified-image:` prefix (e.g. `docker://host/x:tag`, `oci:/dir:tag`). */
  imageReference?: string;
  /** `[boot] boot_type`. */
  bootType?: BootType;
  /** `[boot] digest`: SHA-256 hex of kernel ‖ initrd (BLS) or the UKI's .linux ‖ .initrd sections. */
  bootDigest?: string;
  /** `[image] manifest_digest` (`sha256:<hex>`). */
  manifestDigest?: string;
  /** Other keys, as `section.key` → value, in file order. */
  extra: Array<[string, string]>;
}

export const ORIGIN_IMAGE_PREFIX = 'ostree-unverified-image:';

export function originFileName(digestHex: string): string {
  return `${digestHex}.origin`;
}

export function parseOrigin(text: string, name = 'origin'): DeploymentOrigin {
  const o: DeploymentOrigin = { extra: [] };
  let section = '';
  text.split('\n').forEach((raw, idx) => {
    const line = idx + 1;
    const l = raw.replace(/\r$/, '').trim();
    if (l === '' || l.startsWith('#') || l.startsWith(';')) return;
    const sec = /^\[([^\]]+)\]$/.exec(l);
    if (sec) {
      section = sec[1]!.trim();
      return;
    }
    const eq = l.indexOf('=');
    if (eq <= 0) throw new ParseError(`${name}: expected 'key = value' or '[section]'`, line);
    if (section === '') throw new ParseError(`${name}: key outside of a section`, line);
    const key = l.slice(0, eq).trim();
    const value = l.slice(eq + 1).trim();
    const full = `${section}.${key}`;
    switch (full) {
      case 'origin.container-image-reference':
        o.imageReference = value.startsWith(ORIGIN_IMAGE_PREFIX) ? value.slice(ORIGIN_IMAGE_PREFIX.length) : value;
        break;
      case 'boot.boot_type':
        if (value !== 'bls' && value !== 'uki') throw new ParseError(`${name}: boot_type must be bls or uki, not '${value}'`, line);
        o.bootType = value;
        break;
      case 'boot.digest':
        if (!/^[0-9a-f]{64}$/.test(value)) throw new ParseError(`${name}: boot digest must be 64 lowercase hex digits`, line);
        o.bootDigest = value;
        break;
      case 'image.manifest_digest':
        o.manifestDigest = value;
        break;
      default:
        o.extra.push([full, value]);
    }
  });
  return o;
}

export function writeOrigin(o: DeploymentOrigin): string {
  const sections = new Map<string, Array<[string, string]>>();
  const put = (sec: string, key: string, value: string | undefined): void => {
    if (value === undefined) return;
    if (/[\r\n]/.test(value)) throw new ParseError(`origin ${sec}.${key}: value contains a line break`);
    if (!sections.has(sec)) sections.set(sec, []);
    sections.get(sec)!.push([key, value]);
  };
  put('origin', 'container-image-reference', o.imageReference === undefined ? undefined : ORIGIN_IMAGE_PREFIX + o.imageReference);
  put('boot', 'boot_type', o.bootType);
  put('boot', 'digest', o.bootDigest);
  put('image', 'manifest_digest', o.manifestDigest);
  for (const [full, value] of o.extra) {
    const dot = full.indexOf('.');
    put(full.slice(0, dot), full.slice(dot + 1), value);
  }
  return [...sections].map(([sec, kv]) => `[${sec}]\n${kv.map(([k, v]) => `${k} = ${v}\n`).join('')}`).join('\n');
}
