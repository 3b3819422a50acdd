/**
 * Writing OCI images: `oci:DIR[:TAG]` (image layout directory) and `oci-archive:FILE[:TAG]` (the same
 * layout as a tar file).
 *
 * Layout directory: blobs are written to a temp file, fsynced and renamed to `blobs/<alg>/<hex>` after
 * their digest and size were checked; existing blobs are kept (content-addressed). `index.json` is
 * replaced atomically last, so a killed write leaves either the old index or the new one, never an
 * index naming a missing blob. An entry with the same `org.opencontainers.image.ref.name` is replaced.
 *
 * Archive: the layout is built in a temp directory next to FILE, then tarred into a temp file that is
 * renamed over FILE.
 */
import { createHash } from 'node:crypto';
import { promises as fsp, createReadStream } from 'node:fs';
import * as path from 'node:path';
import { BootcfsError } from '../errors.js';
import { fsyncDir, writeFileAtomic, tempPathIn } from '../util/atomic-file.js';
import { parseDigest } from './digest.js';
import { blobPath, REF_NAME_ANNOTATION } from './layout.js';
import type { OciDescriptor } from './types.js';

export const OCI_LAYOUT_MARKER = '{"imageLayoutVersion":"1.0.0"}';

export class OciLayoutWriter {
  private constructor(readonly root: string) {}

  /** Opens (creating if needed) an image layout directory. */
  static async open(root: string): Promise<OciLayoutWriter> {
    await fsp.mkdir(path.join(root, 'blobs', 'sha256'), { recursive: true });
    const marker = path.join(root, 'oci-layout');
    try {
      const doc = JSON.parse(await fsp.readFile(marker, 'utf8')) as { imageLayoutVersion?: unknown };
      if (typeof doc.imageLayoutVersion !== 'string' || !doc.imageLayoutVersion.startsWith('1.')) {
        throw new BootcfsError('EFORMAT', `${root}: unsupported oci-layout ${JSON.stringify(doc.imageLayoutVersion)}`);
      }
    } catch (e) {
      if (e instanceof BootcfsError) throw e;
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new BootcfsError('EFORMAT', `${root}: oci-layout is not valid JSON`);
      await writeFileAtomic(marker, Buffer.from(OCI_LAYOUT_MARKER));
    }
    return new OciLayoutWriter(root);
  }

  async hasBlob(digest: string): Promise<boolean> {
    try {
      const st = await fsp.stat(path.join(this.root, blobPath(digest)));
      return st.isFile();
    } catch {
      return false;
    }
  }

  /**
   * Stores a blob; `data` is verified against `descriptor.digest`/`size` before it is renamed into
   * place (a mismatch leaves nothing behind).
   */
  async putBlob(descriptor: Pick<OciDescriptor, 'digest' | 'size'>, data: Uint8Array | AsyncIterable<Uint8Array>): Promise<void> {
    const { algorithm, hex } = parseDigest(descriptor.digest);
    const target = path.join(this.root, blobPath(descriptor.digest));
    if (await this.hasBlob(descriptor.digest)) {
      if (!(data instanceof Uint8Array)) for await (const _ of data) void _; // drain (and verify) the source
      return;
    }
    await fsp.mkdir(path.dirname(target), { recursive: true });
    const tmp = tempPathIn(path.dirname(target));
    const fh = await fsp.open(tmp, 'wx', 0o644);
    const h = createHash(algorithm);
    let size = 0;
    try {
      const chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array> = data instanceof Uint8Array ? [data] : data;
      for await (const c of chunks) {
        h.update(c);
        size += c.length;
        await fh.write(c);
      }
      if (size !== descriptor.size || h.digest('hex') !== hex) {
        throw new BootcfsError('EVERITY', `blob ${descriptor.digest}: content does not match its digest/size (${size} bytes)`);
      }
      await fh.sync();
      await fh.close();
      await fsp.rename(tmp, target);
      await fsyncDir(path.dirname(target));
    } catch (e) {
      await fh.close().catch(() => undefined);
      await fsp.rm(tmp, { force: true });
      throw e;
    }
  }

  /** Adds (or replaces, by tag) a manifest entry in index.json. The manifest blob must be stored. */
  async addManifest(descriptor: OciDescriptor, tag?: string): Promise<void> {
    if (!(await this.hasBlob(descriptor.digest))) throw new BootcfsError('EINTERNAL', `manifest ${descriptor.digest} is not stored in ${this.root}`);
    const indexPath = path.join(this.root, 'index.json');
    let index: { schemaVersion: number; mediaType?: string; manifests: Array<Record<string, unknown>> } = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [],
    };
    try {
      index = JSON.parse(await fsp.readFile(indexPath, 'utf8')) as typeof index;
      if (!Array.isArray(index.manifests)) throw new Error('no manifests');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new BootcfsError('EFORMAT', `${indexPath}: not a valid image index`);
    }
    const entry: Record<string, unknown> = { mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size };
    if (tag !== undefined) entry.annotations = { [REF_NAME_ANNOTATION]: tag };
    index.manifests = index.manifests.filter((m) => {
      const ann = m.annotations as Record<string, unknown> | undefined;
      return tag === undefined ? m.digest !== descriptor.digest : ann?.[REF_NAME_ANNOTATION] !== tag;
    });
    index.manifests.push(entry);
    await writeFileAtomic(indexPath, Buffer.from(JSON.stringify(index)));
  }
}

/** Tars a layout directory (sorted, regular files and directories only) into FILE atomically. */
export async function tarLayoutDirectory(dir: string, file: string): Promise<void> {
  const { writeTar } = await import('./tar-writer.js');
  const headerOnly: Array<{ rel: string; type: 'dir' | 'reg'; size: number }> = [];
  const walk = async (rel: string): Promise<void> => {
    const names = (await fsp.readdir(path.join(dir, rel))).sort();
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      const st = await fsp.lstat(path.join(dir, r));
      if (st.isDirectory()) {
        headerOnly.push({ rel: r, type: 'dir', size: 0 });
        await walk(r);
      } else if (st.isFile()) headerOnly.push({ rel: r, type: 'reg', size: st.size });
    }
  };
  await walk('');
  const tmp = tempPathIn(path.dirname(path.resolve(file)));
  const fh = await fsp.open(tmp, 'wx', 0o644);
  try {
    for (const e of headerOnly) {
      // header (and PAX header) of this entry: writeTar of an empty-content entry minus its end blocks
      const hdr = writeTar([{ path: e.rel, type: e.type, mode: e.type === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, mtimeSec: 0, content: e.type === 'reg' ? Buffer.alloc(0) : undefined }]);
      const withoutEnd = hdr.subarray(0, hdr.length - 1024);
      if (e.type === 'reg') {
        // patch the size field of the last header block (content streamed below)
        const h = Buffer.from(withoutEnd);
        const last = h.length - 512;
        if (e.size >= 8 ** 11) throw new BootcfsError('ELIMIT', `${e.rel}: ${e.size} bytes is too large for the archive writer`);
        h.write(e.size.toString(8).padStart(11, '0') + '\0', last + 124, 'latin1');
        h.fill(0x20, last + 148, last + 156);
        let sum = 0;
        for (let i = last; i < last + 512; i++) sum += h[i]!;
        h.write(sum.toString(8).padStart(6, '0') + '\0 ', last + 148, 'latin1');
        await fh.write(h);
        for await (const c of createReadStream(path.join(dir, e.rel), { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) await fh.write(c);
        const r = e.size % 512;
        if (r) await fh.write(Buffer.alloc(512 - r));
      } else await fh.write(withoutEnd);
    }
    await fh.write(Buffer.alloc(1024));
    await fh.sync();
    await fh.close();
    await fsp.rename(tmp, file);
    await fsyncDir(path.dirname(path.resolve(file)));
  } catch (e) {
    await fh.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true });
    throw e;
  }
}
