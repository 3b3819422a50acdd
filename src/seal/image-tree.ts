/**
 * The image tree of an OCI image without a repository: every layer is streamed once (blob digest,
 * decompression, diff_id verified), files above the inline threshold are only measured (fs-verity, in the
 * sealing algorithm) — except the few files the boot build needs (kernel, initramfs, os-release, kargs.d,
 * systemd-boot EFI binaries, the SELinux policy, sealed artifacts under /boot), whose contents are kept in
 * memory, keyed by their digest. Nothing is written to disk: this is what makes `build-sealed`,
 * `verify-sealed` and `compute-composefs-digest --image` cheap (no object store, no fsync) and lets them
 * run unprivileged anywhere.
 *
 * The tree is the same one a pull builds (same LayerTreeBuilder, xattr rule, OCI root transform), so the
 * digests agree with `cfs oci compute-id` of a pulled image.
 */
import { BootcfsError } from '../errors.js';
import { FsVerityHasher, type HashAlgorithm } from '../fsverity/index.js';
import { LayerTreeBuilder, normaliseTarPath, type ExternalContentHandler } from '../oci/layers.js';
import { openImageSource, openLayer, type ConfigResult, type ImageSource, type ManifestResult } from '../oci/source.js';
import type { RegistryOptions } from '../oci/registry.js';
import { applyXattrRule } from '../oci/xattr-rule.js';
import { transformForOci } from '../oci/transform.js';
import type { ContentReader } from '../oci/bootable.js';
import { Inode, type ByteString, type FileSystem } from '../tree/model.js';

/** Paths whose contents the boot build reads (relative, no leading '/'; latin1 byte strings). */
export function isBootInput(rel: ByteString): boolean {
  return (
    /^usr\/lib\/modules\/[^/]+\/(vmlinuz|initramfs\.img)$/.test(rel) ||
    rel === 'usr/lib/os-release' ||
    rel === 'etc/os-release' ||
    /^usr\/lib\/bootc\/kargs\.d\/[^/]+\.toml$/.test(rel) ||
    /^usr\/lib\/systemd\/boot\/efi\/[^/]+$/.test(rel) ||
    rel.startsWith('etc/selinux/') ||
    /^boot\/EFI\/Linux\/[^/]+$/i.test(rel) ||
    /^boot\/EFI\/systemd\/[^/]+$/i.test(rel) ||
    /^boot\/[^/]+\.dump$/.test(rel)
  );
}

/** At most this much content is kept in memory (a UKI with a big initramfs is ~100 MB). */
const MAX_CAPTURED_BYTES = 1 << 30;

export class CapturedContents {
  private readonly byDigest = new Map<string, Buffer>();
  private bytes = 0;

  add(digest: Buffer, data: Buffer): void {
    const k = digest.toString('hex');
    if (this.byDigest.has(k)) return;
    this.bytes += data.length;
    if (this.bytes > MAX_CAPTURED_BYTES) throw new BootcfsError('ELIMIT', 'the boot files of the image exceed 1 GiB');
    this.byDigest.set(k, data);
  }

  get(digest: Buffer): Buffer | undefined {
    return this.byDigest.get(digest.toString('hex'));
  }

  /** A ContentReader for the bootable transform and readTreeFile: inline content, or a captured file. */
  reader(): ContentReader {
    return async (inode: Inode, path: ByteString) => {
      if (inode.content !== undefined) return inode.content;
      if (inode.size === 0) return Buffer.alloc(0);
      const d = inode.digest === undefined ? undefined : this.get(inode.digest);
      if (d === undefined) throw new BootcfsError('EINTERNAL', `${Buffer.from(path, 'latin1').toString('utf8')}: content was not kept while reading the layers`);
      return d;
    };
  }
}

/** Measures external files; keeps the content of boot inputs. */
export function measuringHandler(algorithm: HashAlgorithm, captured: CapturedContents, capture: (rel: ByteString) => boolean): ExternalContentHandler {
  return async (content, entry) => {
    const hasher = new FsVerityHasher(algorithm);
    const rel = (normaliseTarPath(entry.path) ?? []).join('/');
    const keep = capture(rel);
    const parts: Buffer[] = [];
    for await (const chunk of content) {
      hasher.update(chunk);
      if (keep) parts.push(Buffer.from(chunk));
    }
    const digest = hasher.digest();
    if (keep) captured.add(digest, Buffer.concat(parts));
    return digest;
  };
}

export interface LoadedImage {
  /** after the xattr rule and the OCI root transform (not yet the bootable transform) */
  tree: FileSystem;
  captured: CapturedContents;
  manifest: ManifestResult;
  config: ConfigResult;
  /** the builder, for applying more layers on top (build-sealed's check) */
  builder: LayerTreeBuilder;
}

export interface LoadImageOptions {
  algorithm: HashAlgorithm;
  registry?: RegistryOptions;
  capture?: (rel: ByteString) => boolean;
}

/** Streams the layers of `source` (already opened) into a tree; see the file comment. */
export async function loadImageTreeFrom(source: ImageSource, opts: LoadImageOptions): Promise<LoadedImage> {
  const manifest = await source.getManifest();
  const config = await source.getConfig();
  const diffIds = config.config.rootfs.diff_ids;
  const layers = manifest.manifest.layers;
  if (layers.length !== diffIds.length) {
    throw new BootcfsError('EFORMAT', `the manifest has ${layers.length} layers but the config ${diffIds.length} diff_ids`);
  }
  const captured = new CapturedContents();
  const external = measuringHandler(opts.algorithm, captured, opts.capture ?? isBootInput);
  const builder = new LayerTreeBuilder();
  for (let i = 0; i < layers.length; i++) {
    await builder.applyLayer(openLayer(source, layers[i]!, { diffId: diffIds[i]! }), { external, layerName: `layer ${diffIds[i]}` });
  }
  return { tree: finishTree(builder), captured, manifest, config, builder };
}

/**
 * A copy of the builder's tree with the rules every image path applies (xattr rule, OCI root transform);
 * the builder's own tree stays as the layers made it, so more layers can be applied later.
 */
export function finishTree(builder: LayerTreeBuilder): FileSystem {
  const fs = cloneTree(builder.finish());
  applyXattrRule(fs);
  return transformForOci(fs);
}

export async function loadImageTree(ref: string, opts: LoadImageOptions): Promise<LoadedImage> {
  const source = await openImageSource(ref, { registry: opts.registry });
  try {
    return await loadImageTreeFrom(source, opts);
  } finally {
    await source.close();
  }
}

/** A deep copy of a tree (hardlinked inodes stay shared within the copy; content buffers are shared). */
export function cloneTree(fs: FileSystem): FileSystem {
  const map = new Map<Inode, Inode>();
  const copy = (i: Inode): Inode => {
    const seen = map.get(i);
    if (seen) return seen;
    const c = new Inode({
      mode: i.mode, uid: i.uid, gid: i.gid, mtimeSec: i.mtimeSec, mtimeNsec: i.mtimeNsec, nlink: i.nlink,
      xattrs: new Map([...i.xattrs].map(([k, v]) => [k, Buffer.from(v)])), rdev: i.rdev, size: i.size,
      content: i.content, payload: i.payload, digest: i.digest, target: i.target,
    });
    map.set(i, c);
    if (i.entries) for (const [n, ch] of i.entries) c.entries!.set(n, copy(ch));
    return c;
  };
  const out: FileSystem = { root: copy(fs.root) };
  if (fs.hardlinkNames) out.hardlinkNames = new Map([...fs.hardlinkNames].map(([k, v]) => [map.get(k) ?? k, new Set(v)]));
  return out;
}
