/**
 * FAT32 filesystem images (the EFI System Partition), written and read without mounts or mtools.
 *
 * Writer: `buildFat32Image` lays out a complete FAT32 volume (512-byte sectors, 32 reserved sectors,
 * 2 FATs, FSInfo at sector 1, backup boot sector at 6, root directory at cluster 2, volume label
 * entry, VFAT long names with unique 8.3 short names carrying `~N` tails, `.`/`..` entries, fixed
 * timestamps, contiguous file data) and returns it as a *sparse description*: a list of extents
 * (offset, bytes). Everything not covered by an extent is unused space whose content does not matter
 * (free clusters), so a 1 GiB ESP is written as a few MiB of metadata plus the file bytes.
 * The reserved region, both FATs in full, and every directory cluster are extents, so writing the image
 * over stale data still yields a consistent filesystem.
 *
 * Reader: `readFat32` lists and reads files from a byte source, bounds-checking every structure and
 * throwing FormatError (with the byte offset) on anything malformed: cluster numbers out of range,
 * chain loops, chains shorter than the file size, directory cycles.
 */
import { createHash } from 'node:crypto';
import { fstatSync, ftruncateSync, readSync, writeSync } from 'node:fs';
import { BootcfsError, FormatError } from '../errors.js';

export const SECTOR_SIZE = 512;
export const RESERVED_SECTORS = 32;
export const FAT_COUNT = 2;
export const ROOT_CLUSTER = 2;
const FSINFO_SECTOR = 1;
const BACKUP_BOOT_SECTOR = 6;
const DIRENT_SIZE = 32;
/** FAT32 needs at least this many clusters (fewer would make it FAT16 by the spec's definition). */
export const FAT32_MIN_CLUSTERS = 65525;
const FAT32_MAX_CLUSTERS = 0x0ffffff5 - 2;
const EOC = 0x0fffffff;
const ATTR_READ_ONLY = 0x01;
const ATTR_HIDDEN = 0x02;
const ATTR_SYSTEM = 0x04;
const ATTR_VOLUME_ID = 0x08;
const ATTR_DIRECTORY = 0x10;
const ATTR_ARCHIVE = 0x20;
const ATTR_LONG_NAME = ATTR_READ_ONLY | ATTR_HIDDEN | ATTR_SYSTEM | ATTR_VOLUME_ID;
const MAX_DIR_ENTRIES = 65536;
const MAX_LONG_NAME = 255;

export interface Fat32File { path: string; data: Buffer }
export interface Fat32Options {
  /** Volume size in bytes (multiple of 512). */
  sizeBytes: number;
  /** Volume label, at most 11 characters of A-Z 0-9 space and ! # $ % & ' ( ) - @ ^ _ ` { } ~. */
  label?: string;
  /** 32-bit volume serial number; default: derived from the label, size and file list (reproducible). */
  volumeId?: number;
  files: Fat32File[];
  /** Extra (possibly empty) directories; parents of files are created implicitly. */
  directories?: string[];
  /** Sectors preceding the volume on the disk (BPB_HiddSec): the partition's start LBA. Default 0. */
  hiddenSectors?: number;
  /** Timestamp of every entry (default 1980-01-01 00:00:00, the FAT epoch): reproducible images. */
  timestamp?: Date;
}

export interface Fat32Geometry {
  totalSectors: number;
  sectorsPerCluster: number;
  clusterSize: number;
  fatSectors: number;
  clusterCount: number;
  /** Byte offset of cluster 2. */
  dataOffset: number;
}

export interface Fat32Extent { offset: number; data: Buffer }
export interface Fat32Image {
  sizeBytes: number;
  geometry: Fat32Geometry;
  volumeId: number;
  label: string;
  /** Sorted, non-overlapping. Bytes outside every extent belong to free clusters (any content). */
  extents: Fat32Extent[];
  usedClusters: number;
}

/** Sectors per cluster for a FAT32 volume of `totalSectors`, following mkfs.fat (and Microsoft's format). */
export function fat32SectorsPerCluster(totalSectors: number): number {
  const bytes = totalSectors * SECTOR_SIZE;
  const MiB = 1024 * 1024;
  if (bytes <= 260 * MiB) return 1;
  if (bytes <= 8192 * MiB) return 8;
  if (bytes <= 16384 * MiB) return 16;
  if (bytes <= 32768 * MiB) return 32;
  return 64;
}

export function fat32Geometry(sizeBytes: number): Fat32Geometry {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % SECTOR_SIZE !== 0) {
    throw new BootcfsError('EINVAL', `FAT32 size ${sizeBytes} is not a positive multiple of ${SECTOR_SIZE}`);
  }
  const totalSectors = sizeBytes / SECTOR_SIZE;
  if (totalSectors > 0xffffffff) throw new BootcfsError('ELIMIT', `FAT32 size ${sizeBytes} exceeds 2 TiB`);
  const spc = fat32SectorsPerCluster(totalSectors);
  const clustersFor = (fatSectors: number): number => {
    const dataSectors = totalSectors - RESERVED_SECTORS - FAT_COUNT * fatSectors;
    return dataSectors > 0 ? Math.floor(dataSectors / spc) : 0;
  };
  const fits = (fatSectors: number): boolean => Math.ceil(((clustersFor(fatSectors) + 2) * 4) / SECTOR_SIZE) <= fatSectors;
  // Grow to a fixpoint, then shrink to the smallest FAT that still maps every cluster.
  let fatSectors = 1;
  while (!fits(fatSectors)) fatSectors = Math.ceil(((clustersFor(fatSectors) + 2) * 4) / SECTOR_SIZE);
  while (fatSectors > 1 && fits(fatSectors - 1)) fatSectors--;
  const clusterCount = clustersFor(fatSectors);
  if (clusterCount < FAT32_MIN_CLUSTERS) {
    throw new BootcfsError('ELIMIT', `FAT32 needs at least ${FAT32_MIN_CLUSTERS} clusters; ${sizeBytes} bytes give ${clusterCount}`);
  }
  if (clusterCount > FAT32_MAX_CLUSTERS) throw new BootcfsError('ELIMIT', `FAT32 size ${sizeBytes} gives too many clusters`);
  const clusterSize = spc * SECTOR_SIZE;
  return {
    totalSectors,
    sectorsPerCluster: spc,
    clusterSize,
    fatSectors,
    clusterCount,
    dataOffset: (RESERVED_SECTORS + FAT_COUNT * fatSectors) * SECTOR_SIZE,
  };
}

// ---------------------------------------------------------------------------------------------
// names

const SHORT_SPECIALS = "!#$%&'()-@^_`{}~";
function isShortChar(c: string): boolean {
  return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || SHORT_SPECIALS.includes(c);
}
const LONG_FORBIDDEN = '"*/:<>?\\|';

/** Validates a long (VFAT) name component; throws EINVAL. */
export function validateLongName(name: string): void {
  if (name === '' || name === '.' || name === '..') throw new BootcfsError('EINVAL', `invalid FAT file name '${name}'`);
  if (name.length > MAX_LONG_NAME) throw new BootcfsError('ELIMIT', `FAT file name longer than ${MAX_LONG_NAME} UTF-16 units: '${name}'`);
  for (const ch of name) {
    const cp = ch.codePointAt(0)!;
    if (cp < 0x20 || LONG_FORBIDDEN.includes(ch)) throw new BootcfsError('EINVAL', `character U+${cp.toString(16).padStart(4, '0')} not allowed in FAT file name '${name}'`);
  }
  if (/[ .]$/.test(name)) throw new BootcfsError('EINVAL', `FAT file name '${name}' ends with a space or dot`);
  if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(name)) throw new BootcfsError('EINVAL', `FAT file name '${name}' has unpaired surrogates`);
}

/** Case-insensitive key FAT uses to compare names (ASCII and simple Unicode upper-casing). */
function nameKey(name: string): string {
  return name.toUpperCase();
}

/** The 8.3 basis name (base, ext) of a long name and whether the conversion lost information. */
export function shortNameBasis(name: string): { base: string; ext: string; lossy: boolean } {
  let lossy = false;
  let s = name.replace(/ /g, '');
  if (s !== name) lossy = true;
  const stripped = s.replace(/^\.+/, '');
  if (stripped !== s) lossy = true;
  s = stripped;
  const dot = s.lastIndexOf('.');
  let basePart = dot >= 0 ? s.slice(0, dot) : s;
  const extPart = dot >= 0 ? s.slice(dot + 1) : '';
  if (basePart.includes('.')) { basePart = basePart.replace(/\./g, ''); lossy = true; }
  const conv = (part: string): string => {
    let out = '';
    for (const ch of part) {
      const up = ch >= 'a' && ch <= 'z' ? ch.toUpperCase() : ch;
      if (isShortChar(up)) out += up;
      else { out += '_'; lossy = true; }
    }
    return out;
  };
  let base = conv(basePart);
  let ext = conv(extPart);
  if (base.length > 8) { base = base.slice(0, 8); lossy = true; }
  if (ext.length > 3) { ext = ext.slice(0, 3); lossy = true; }
  if (base === '') { base = '_'; lossy = true; }
  return { base, ext, lossy };
}

/** 11-byte directory-entry form of base/ext. */
function packShort(base: string, ext: string): Buffer {
  return Buffer.from(base.padEnd(8, ' ') + ext.padEnd(3, ' '), 'latin1');
}

/**
 * Picks a short name unique in `taken` (keys of packed 11-byte names): the basis itself if lossless,
 * else `BASE~N` with N = 1, 2, ... and the base shortened to make room (as Windows and mtools do).
 */
export function makeShortName(name: string, taken: Set<string>): Buffer {
  const { base, ext, lossy } = shortNameBasis(name);
  if (!lossy) {
    const packed = packShort(base, ext);
    if (!taken.has(packed.toString('latin1'))) return packed;
  }
  for (let n = 1; n < 1_000_000; n++) {
    const tail = `~${n}`;
    const packed = packShort(base.slice(0, 8 - tail.length) + tail, ext);
    if (!taken.has(packed.toString('latin1'))) return packed;
  }
  throw new BootcfsError('ELIMIT', `no free short name for '${name}'`);
}

/** Short-name checksum stored in every LFN entry. */
export function shortNameChecksum(short11: Buffer): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = ((((sum & 1) << 7) | (sum >> 1)) + short11[i]!) & 0xff;
  return sum;
}

/** Display form of an 11-byte short name; `ntCase` is the entry's byte 12 (0x08: base lower, 0x10: ext lower). */
function displayShort(short11: Buffer, ntCase = 0): string {
  const raw = Buffer.from(short11);
  if (raw[0] === 0x05) raw[0] = 0xe5;
  let base = raw.subarray(0, 8).toString('latin1').trimEnd();
  let ext = raw.subarray(8, 11).toString('latin1').trimEnd();
  if (ntCase & 0x08) base = base.replace(/[A-Z]/g, (c) => c.toLowerCase());
  if (ntCase & 0x10) ext = ext.replace(/[A-Z]/g, (c) => c.toLowerCase());
  return ext ? `${base}.${ext}` : base;
}

// ---------------------------------------------------------------------------------------------
// writer

interface DirNode {
  kind: 'dir';
  name: string;
  children: Map<string, Node>; // key: nameKey
  parent: DirNode | null;
  cluster: number;
  clusters: number;
  entries: Buffer | null;
}
interface FileNode { kind: 'file'; name: string; data: Buffer; cluster: number; clusters: number }
type Node = DirNode | FileNode;

function splitPath(p: string): string[] {
  const parts = p.split('/').filter((x) => x !== '');
  if (parts.length === 0) throw new BootcfsError('EINVAL', `empty FAT path '${p}'`);
  for (const part of parts) validateLongName(part);
  return parts;
}

function fatDate(d: Date): { date: number; time: number } {
  const y = d.getUTCFullYear();
  if (y < 1980 || y > 2107) throw new BootcfsError('EINVAL', `FAT timestamps cover 1980..2107, not ${y}`);
  return {
    date: ((y - 1980) << 9) | ((d.getUTCMonth() + 1) << 5) | d.getUTCDate(),
    time: (d.getUTCHours() << 11) | (d.getUTCMinutes() << 5) | (d.getUTCSeconds() >> 1),
  };
}

function writeShortEntry(buf: Buffer, off: number, short11: Buffer, attr: number, cluster: number, size: number,
  ts: { date: number; time: number }): void {
  short11.copy(buf, off);
  buf[off + 11] = attr;
  buf[off + 12] = 0;
  buf[off + 13] = 0;
  buf.writeUInt16LE(ts.time, off + 14);
  buf.writeUInt16LE(ts.date, off + 16);
  buf.writeUInt16LE(ts.date, off + 18);
  buf.writeUInt16LE(cluster >>> 16, off + 20);
  buf.writeUInt16LE(ts.time, off + 22);
  buf.writeUInt16LE(ts.date, off + 24);
  buf.writeUInt16LE(cluster & 0xffff, off + 26);
  buf.writeUInt32LE(size, off + 28);
}

function lfnEntryCount(name: string): number {
  return Math.ceil(name.length / 13);
}

/** Writes the LFN entries for `name` (last part first) at `off`; returns the offset after them. */
function writeLfnEntries(buf: Buffer, off: number, name: string, checksum: number): number {
  const n = lfnEntryCount(name);
  const units: number[] = [];
  for (let i = 0; i < name.length; i++) units.push(name.charCodeAt(i));
  if (units.length % 13 !== 0) units.push(0);
  while (units.length % 13 !== 0) units.push(0xffff);
  const slots = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
  for (let k = n; k >= 1; k--) {
    buf[off] = k | (k === n ? 0x40 : 0);
    buf[off + 11] = ATTR_LONG_NAME;
    buf[off + 12] = 0;
    buf[off + 13] = checksum;
    buf.writeUInt16LE(0, off + 26);
    for (let j = 0; j < 13; j++) buf.writeUInt16LE(units[(k - 1) * 13 + j]!, off + slots[j]!);
    off += DIRENT_SIZE;
  }
  return off;
}

function packLabel(label: string): Buffer {
  if (label.length === 0 || label.length > 11) throw new BootcfsError('EINVAL', `FAT volume label '${label}' must have 1..11 characters`);
  for (const ch of label) {
    if (ch !== ' ' && !isShortChar(ch)) throw new BootcfsError('EINVAL', `character '${ch}' not allowed in FAT volume label '${label}'`);
  }
  if (label.startsWith(' ')) throw new BootcfsError('EINVAL', `FAT volume label '${label}' starts with a space`);
  return Buffer.from(label.padEnd(11, ' '), 'latin1');
}

/** Builds a FAT32 volume; see the module comment. Throws EINVAL/ELIMIT (BootcfsError) on bad input or no space. */
export function buildFat32Image(opts: Fat32Options): Fat32Image {
  const geo = fat32Geometry(opts.sizeBytes);
  const label = opts.label ?? 'EFI-SYSTEM';
  const label11 = packLabel(label);
  const ts = fatDate(opts.timestamp ?? new Date(Date.UTC(1980, 0, 1)));
  const hidden = opts.hiddenSectors ?? 0;
  if (!Number.isInteger(hidden) || hidden < 0 || hidden > 0xffffffff) throw new BootcfsError('EINVAL', `bad hidden sector count ${hidden}`);

  // --- tree
  const root: DirNode = { kind: 'dir', name: '', children: new Map(), parent: null, cluster: ROOT_CLUSTER, clusters: 0, entries: null };
  const ensureDir = (parts: string[], full: string): DirNode => {
    let d = root;
    for (const part of parts) {
      const existing = d.children.get(nameKey(part));
      if (existing === undefined) {
        const nd: DirNode = { kind: 'dir', name: part, children: new Map(), parent: d, cluster: 0, clusters: 0, entries: null };
        d.children.set(nameKey(part), nd);
        d = nd;
      } else if (existing.kind === 'dir') {
        if (existing.name !== part) throw new BootcfsError('EINVAL', `'${full}': '${part}' differs only in case from '${existing.name}'`);
        d = existing;
      } else {
        throw new BootcfsError('EINVAL', `'${full}': '${existing.name}' is a file, not a directory`);
      }
    }
    return d;
  };
  for (const dir of opts.directories ?? []) ensureDir(splitPath(dir), dir);
  for (const f of opts.files) {
    const parts = splitPath(f.path);
    const name = parts.pop()!;
    if (f.data.length > 0xffffffff) throw new BootcfsError('ELIMIT', `'${f.path}' is larger than 4 GiB - 1`);
    const d = ensureDir(parts, f.path);
    if (d.children.has(nameKey(name))) throw new BootcfsError('EINVAL', `duplicate FAT path '${f.path}' (names are case-insensitive)`);
    d.children.set(nameKey(name), { kind: 'file', name, data: f.data, cluster: 0, clusters: 0 });
  }

  const cs = geo.clusterSize;
  // --- directory entry layout (sizes), short names
  interface Planned { node: Node; short11: Buffer; lfn: boolean }
  const plans = new Map<DirNode, Planned[]>();
  const dirs: DirNode[] = [];
  const walk = (d: DirNode): void => {
    dirs.push(d);
    const kids = [...d.children.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const taken = new Set<string>();
    const planned: Planned[] = [];
    // Names that are exact 8.3 names take their own short name first, so generated ones never steal it.
    for (const pass of [0, 1]) {
      for (const node of kids) {
        const b = shortNameBasis(node.name);
        const exact = !b.lossy && displayShort(packShort(b.base, b.ext)) === node.name;
        if ((pass === 0) !== exact) continue;
        const short11 = makeShortName(node.name, taken);
        taken.add(short11.toString('latin1'));
        planned.push({ node, short11, lfn: displayShort(short11) !== node.name });
      }
    }
    planned.sort((a, b) => (a.node.name < b.node.name ? -1 : a.node.name > b.node.name ? 1 : 0));
    let count = d === root ? 1 : 2;
    for (const p of planned) count += 1 + (p.lfn ? lfnEntryCount(p.node.name) : 0);
    if (count > MAX_DIR_ENTRIES) throw new BootcfsError('ELIMIT', `directory '${d.name}' needs ${count} entries (FAT allows ${MAX_DIR_ENTRIES})`);
    d.clusters = Math.max(1, Math.ceil((count * DIRENT_SIZE) / cs));
    plans.set(d, planned);
    for (const p of planned) if (p.node.kind === 'dir') walk(p.node);
  };
  walk(root);

  // --- allocation: directories first, then file data, each contiguous
  let next = ROOT_CLUSTER;
  for (const d of dirs) { d.cluster = next; next += d.clusters; }
  const files: FileNode[] = [];
  for (const d of dirs) for (const p of plans.get(d)!) if (p.node.kind === 'file') files.push(p.node);
  for (const f of files) {
    f.clusters = Math.ceil(f.data.length / cs);
    f.cluster = f.clusters > 0 ? next : 0;
    next += f.clusters;
  }
  const usedClusters = next - ROOT_CLUSTER;
  if (usedClusters > geo.clusterCount) {
    throw new BootcfsError('ELIMIT', `FAT32 volume of ${opts.sizeBytes} bytes is too small: need ${usedClusters} clusters of ${cs} bytes, have ${geo.clusterCount}`);
  }

  // --- directory contents
  for (const d of dirs) {
    const buf = Buffer.alloc(d.clusters * cs);
    let off = 0;
    if (d === root) {
      writeShortEntry(buf, off, label11, ATTR_VOLUME_ID, 0, 0, ts);
      off += DIRENT_SIZE;
    } else {
      writeShortEntry(buf, off, packShort('.', ''), ATTR_DIRECTORY, d.cluster, 0, ts);
      const parentCluster = d.parent === root || d.parent === null ? 0 : d.parent.cluster;
      writeShortEntry(buf, off + DIRENT_SIZE, packShort('..', ''), ATTR_DIRECTORY, parentCluster, 0, ts);
      off += 2 * DIRENT_SIZE;
    }
    for (const p of plans.get(d)!) {
      if (p.lfn) off = writeLfnEntries(buf, off, p.node.name, shortNameChecksum(p.short11));
      if (p.node.kind === 'dir') writeShortEntry(buf, off, p.short11, ATTR_DIRECTORY, p.node.cluster, 0, ts);
      else writeShortEntry(buf, off, p.short11, ATTR_ARCHIVE, p.node.cluster, p.node.data.length, ts);
      off += DIRENT_SIZE;
    }
    d.entries = buf;
  }

  // --- FAT
  const fat = Buffer.alloc(geo.fatSectors * SECTOR_SIZE);
  fat.writeUInt32LE(0x0ffffff8, 0);
  fat.writeUInt32LE(0x0fffffff, 4);
  const chain = (first: number, n: number): void => {
    for (let i = 0; i < n; i++) fat.writeUInt32LE(i === n - 1 ? EOC : first + i + 1, (first + i) * 4);
  };
  for (const d of dirs) chain(d.cluster, d.clusters);
  for (const f of files) if (f.clusters > 0) chain(f.cluster, f.clusters);

  // --- reserved region
  const volumeId = (opts.volumeId ?? defaultVolumeId(opts, label)) >>> 0;
  const reserved = Buffer.alloc(RESERVED_SECTORS * SECTOR_SIZE);
  const boot = bootSector(geo, hidden, volumeId, label11);
  boot.copy(reserved, 0);
  boot.copy(reserved, BACKUP_BOOT_SECTOR * SECTOR_SIZE);
  const fsinfo = fsInfoSector(geo.clusterCount - usedClusters, next <= geo.clusterCount + 1 ? next : 0xffffffff);
  fsinfo.copy(reserved, FSINFO_SECTOR * SECTOR_SIZE);
  fsinfo.copy(reserved, (BACKUP_BOOT_SECTOR + FSINFO_SECTOR) * SECTOR_SIZE);
  // Sector 2 (and its backup) carries the boot signature too, as mkfs.fat writes it.
  reserved.writeUInt16LE(0xaa55, 2 * SECTOR_SIZE + 510);
  reserved.writeUInt16LE(0xaa55, (BACKUP_BOOT_SECTOR + 2) * SECTOR_SIZE + 510);

  const extents: Fat32Extent[] = [{ offset: 0, data: reserved }];
  for (let i = 0; i < FAT_COUNT; i++) extents.push({ offset: (RESERVED_SECTORS + i * geo.fatSectors) * SECTOR_SIZE, data: fat });
  const clusterOffset = (c: number): number => geo.dataOffset + (c - ROOT_CLUSTER) * cs;
  for (const d of dirs) extents.push({ offset: clusterOffset(d.cluster), data: d.entries! });
  for (const f of files) if (f.clusters > 0) extents.push({ offset: clusterOffset(f.cluster), data: f.data });
  return { sizeBytes: opts.sizeBytes, geometry: geo, volumeId, label, extents, usedClusters };
}

function defaultVolumeId(opts: Fat32Options, label: string): number {
  const h = createHash('sha256').update(`${opts.sizeBytes}\0${label}\0`);
  const items = [...opts.files.map((f) => `${f.path}\0${f.data.length}`), ...(opts.directories ?? []).map((d) => `${d}/`)].sort();
  for (const it of items) h.update(`${it}\0`);
  return h.digest().readUInt32LE(0);
}

function bootSector(geo: Fat32Geometry, hidden: number, volumeId: number, label11: Buffer): Buffer {
  const b = Buffer.alloc(SECTOR_SIZE);
  b[0] = 0xeb; b[1] = 0x58; b[2] = 0x90; // jmp short 0x5a; nop
  b.write('BOOTCFS ', 3, 'latin1');
  b.writeUInt16LE(SECTOR_SIZE, 11);
  b[13] = geo.sectorsPerCluster;
  b.writeUInt16LE(RESERVED_SECTORS, 14);
  b[16] = FAT_COUNT;
  b.writeUInt16LE(0, 17); // root entries (FAT32: 0)
  b.writeUInt16LE(0, 19); // total sectors 16
  b[21] = 0xf8; // media: fixed disk
  b.writeUInt16LE(0, 22); // FAT size 16
  b.writeUInt16LE(63, 24); // sectors per track (nominal)
  b.writeUInt16LE(255, 26); // heads (nominal)
  b.writeUInt32LE(hidden, 28);
  b.writeUInt32LE(geo.totalSectors, 32);
  b.writeUInt32LE(geo.fatSectors, 36);
  b.writeUInt16LE(0, 40); // ext flags: FAT mirroring on
  b.writeUInt16LE(0, 42); // version 0.0
  b.writeUInt32LE(ROOT_CLUSTER, 44);
  b.writeUInt16LE(FSINFO_SECTOR, 48);
  b.writeUInt16LE(BACKUP_BOOT_SECTOR, 50);
  b[64] = 0x80; // drive number
  b[66] = 0x29; // extended boot signature
  b.writeUInt32LE(volumeId, 67);
  label11.copy(b, 71);
  b.write('FAT32   ', 82, 'latin1');
  // Boot code at 0x5a: not bootable by BIOS; int 18h (boot failure) then halt loop.
  b[0x5a] = 0xcd; b[0x5b] = 0x18; b[0x5c] = 0xeb; b[0x5d] = 0xfe;
  b.writeUInt16LE(0xaa55, 510);
  return b;
}

function fsInfoSector(freeCount: number, nextFree: number): Buffer {
  const b = Buffer.alloc(SECTOR_SIZE);
  b.writeUInt32LE(0x41615252, 0);
  b.writeUInt32LE(0x61417272, 484);
  b.writeUInt32LE(freeCount >>> 0, 488);
  b.writeUInt32LE(nextFree >>> 0, 492);
  b.writeUInt32LE(0xaa550000, 508);
  return b;
}

/**
 * Writes the image's extents to `fd` at byte `offset` (e.g. the ESP's start in a disk image). Never
 * writes the free space, so a fresh sparse file stays sparse. A regular file shorter than the volume's
 * end is extended with ftruncate (sparse).
 */
export function writeFat32Image(image: Fat32Image, fd: number, offset = 0): void {
  const st = fstatSync(fd);
  const end = offset + image.sizeBytes;
  if (st.isFile() && st.size < end) ftruncateSync(fd, end);
  for (const e of image.extents) {
    let done = 0;
    while (done < e.data.length) {
      done += writeSync(fd, e.data, done, e.data.length - done, offset + e.offset + done);
    }
  }
}

/** The whole volume as one Buffer (free space zero-filled); for small images and tests. */
export function fat32ImageToBuffer(image: Fat32Image): Buffer {
  const buf = Buffer.alloc(image.sizeBytes);
  for (const e of image.extents) e.data.copy(buf, e.offset);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// reader

/** Random-access bytes of a FAT volume. `read` may return fewer bytes only at the end of the source. */
export interface Fat32Source { readonly size: number; read(offset: number, length: number): Buffer }

export function bufferSource(buf: Buffer): Fat32Source {
  return { size: buf.length, read: (o, l) => buf.subarray(o, Math.min(buf.length, o + l)) };
}

/** A volume stored in `fd` from byte `offset`, `size` bytes long. */
export function fdSource(fd: number, offset: number, size: number): Fat32Source {
  return {
    size,
    read(o, l) {
      const n = Math.max(0, Math.min(l, size - o));
      const b = Buffer.alloc(n);
      let done = 0;
      while (done < n) {
        const r = readSync(fd, b, done, n - done, offset + o + done);
        if (r === 0) break;
        done += r;
      }
      return b.subarray(0, done);
    },
  };
}

/** Reads a built image's sparse description directly (free space reads as zeros). */
export function imageSource(image: Fat32Image): Fat32Source {
  const ext = [...image.extents].sort((a, b) => a.offset - b.offset);
  return {
    size: image.sizeBytes,
    read(o, l) {
      const n = Math.max(0, Math.min(l, image.sizeBytes - o));
      const out = Buffer.alloc(n);
      for (const e of ext) {
        const s = Math.max(o, e.offset);
        const t = Math.min(o + n, e.offset + e.data.length);
        if (s < t) e.data.copy(out, s - o, s - e.offset, t - e.offset);
      }
      return out;
    },
  };
}

export interface Fat32Entry {
  /** Path from the root with '/' separators, long names. */
  path: string;
  name: string;
  shortName: string;
  isDirectory: boolean;
  size: number;
  firstCluster: number;
}

export interface Fat32Volume {
  geometry: Fat32Geometry;
  label: string;
  volumeId: number;
  /** Every file and directory (depth-first, directory order). */
  entries: Fat32Entry[];
  /** Content of the file at `path` (case-insensitive); ENOENT if absent, EINVAL if a directory. */
  readFile(path: string): Buffer;
}

const MAX_DEPTH = 256;

/** Opens a FAT32 volume and lists all entries; throws FormatError on any malformed structure. */
export function readFat32(input: Buffer | Fat32Source): Fat32Volume {
  const src = Buffer.isBuffer(input) ? bufferSource(input) : input;
  const readExact = (off: number, len: number, what: string): Buffer => {
    if (off < 0 || len < 0 || off + len > src.size) throw new FormatError(`${what} lies outside the ${src.size}-byte volume`, off);
    const b = src.read(off, len);
    if (b.length !== len) throw new FormatError(`short read of ${what}`, off);
    return b;
  };
  const bs = readExact(0, SECTOR_SIZE, 'boot sector');
  if (bs.readUInt16LE(510) !== 0xaa55) throw new FormatError('boot sector signature is not 55 AA', 510);
  const bps = bs.readUInt16LE(11);
  if (![512, 1024, 2048, 4096].includes(bps)) throw new FormatError(`bad bytes per sector ${bps}`, 11);
  const spc = bs[13]!;
  if (spc === 0 || (spc & (spc - 1)) !== 0) throw new FormatError(`bad sectors per cluster ${spc}`, 13);
  const rsvd = bs.readUInt16LE(14);
  if (rsvd === 0) throw new FormatError('zero reserved sectors', 14);
  const nfats = bs[16]!;
  if (nfats === 0) throw new FormatError('zero FATs', 16);
  if (bs.readUInt16LE(17) !== 0 || bs.readUInt16LE(22) !== 0) throw new FormatError('not FAT32 (root entry count or 16-bit FAT size set)', 17);
  const totalSectors = bs.readUInt16LE(19) || bs.readUInt32LE(32);
  const fatSectors = bs.readUInt32LE(36);
  if (fatSectors === 0) throw new FormatError('zero FAT size', 36);
  if (totalSectors * bps > src.size) throw new FormatError(`volume claims ${totalSectors * bps} bytes, source has ${src.size}`, 32);
  const dataSector = rsvd + nfats * fatSectors;
  if (dataSector >= totalSectors) throw new FormatError('FATs extend past the end of the volume', 36);
  const clusterCount = Math.floor((totalSectors - dataSector) / spc);
  if (clusterCount < FAT32_MIN_CLUSTERS) throw new FormatError(`${clusterCount} clusters: too few for FAT32`, 32);
  if ((clusterCount + 2) * 4 > fatSectors * bps) throw new FormatError(`FAT of ${fatSectors} sectors cannot map ${clusterCount} clusters`, 36);
  const rootCluster = bs.readUInt32LE(44);
  const clusterSize = spc * bps;
  const geometry: Fat32Geometry = {
    totalSectors, sectorsPerCluster: spc, clusterSize, fatSectors, clusterCount, dataOffset: dataSector * bps,
  };
  const fatOffset = rsvd * bps;
  const fatBytes = (clusterCount + 2) * 4;
  const fat = readExact(fatOffset, fatBytes, 'FAT');
  const inRange = (c: number): boolean => c >= 2 && c < clusterCount + 2;
  if (!inRange(rootCluster)) throw new FormatError(`root cluster ${rootCluster} out of range`, 44);

  const chainOf = (first: number, maxClusters: number, what: string): number[] => {
    const out: number[] = [];
    let c = first;
    for (;;) {
      if (!inRange(c)) throw new FormatError(`${what}: cluster ${c} out of range`, fatOffset + Math.min(c, clusterCount + 1) * 4);
      if (out.length >= maxClusters) throw new FormatError(`${what}: cluster chain longer than ${maxClusters} (loop?)`, fatOffset + c * 4);
      out.push(c);
      const nx = fat.readUInt32LE(c * 4) & 0x0fffffff;
      if (nx >= 0x0ffffff8) return out;
      if (nx === 0x0ffffff7) throw new FormatError(`${what}: bad cluster in chain`, fatOffset + c * 4);
      if (nx === 0) throw new FormatError(`${what}: chain runs into a free cluster`, fatOffset + c * 4);
      c = nx;
    }
  };
  const clusterOff = (c: number): number => geometry.dataOffset + (c - 2) * clusterSize;
  const readChain = (chain: number[], size: number, what: string): Buffer => {
    const out = Buffer.alloc(size);
    let done = 0;
    for (const c of chain) {
      if (done >= size) break;
      const n = Math.min(clusterSize, size - done);
      readExact(clusterOff(c), n, what).copy(out, done);
      done += n;
    }
    return out;
  };

  let label = bs.subarray(71, 82).toString('latin1').trimEnd();
  const entries: Fat32Entry[] = [];
  const seenDirs = new Set<number>();
  const maxDirClusters = Math.ceil((MAX_DIR_ENTRIES * DIRENT_SIZE) / clusterSize);

  const walk = (cluster: number, prefix: string, depth: number, isRoot: boolean): void => {
    if (depth > MAX_DEPTH) throw new FormatError(`directories nested deeper than ${MAX_DEPTH}`, clusterOff(cluster));
    if (seenDirs.has(cluster)) throw new FormatError(`directory cluster ${cluster} reached twice (cycle)`, clusterOff(cluster));
    seenDirs.add(cluster);
    const chain = chainOf(cluster, maxDirClusters, `directory '${prefix || '/'}'`);
    const data = readChain(chain, chain.length * clusterSize, 'directory');
    let lfnParts: string[] = [];
    let lfnSum = -1;
    let lfnNext = 0;
    const names = new Set<string>();
    for (let off = 0; off + DIRENT_SIZE <= data.length; off += DIRENT_SIZE) {
      const absOff = clusterOff(chain[Math.floor(off / clusterSize)]!) + (off % clusterSize);
      const first = data[off]!;
      if (first === 0x00) break;
      if (first === 0xe5) { lfnParts = []; lfnNext = 0; continue; }
      const attr = data[off + 11]!;
      if ((attr & 0x3f) === ATTR_LONG_NAME) {
        const seq = first & 0x1f;
        if (first & 0x40) {
          if (seq === 0 || seq > 20) throw new FormatError(`LFN sequence number ${seq} out of range`, absOff);
          lfnParts = new Array<string>(seq).fill('');
          lfnSum = data[off + 13]!;
          lfnNext = seq;
        } else if (seq !== lfnNext - 1 || lfnNext === 0 || data[off + 13] !== lfnSum) {
          lfnParts = []; lfnNext = 0; // orphaned LFN entry: ignored, like every FAT driver does
          continue;
        }
        let part = '';
        let ended = false;
        for (const s of [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]) {
          const u = data.readUInt16LE(off + s);
          if (ended) continue;
          if (u === 0) { ended = true; continue; }
          part += String.fromCharCode(u);
        }
        lfnParts[seq - 1] = part;
        lfnNext = seq;
        continue;
      }
      const short11 = data.subarray(off, off + 11);
      let longName: string | null = null;
      if (lfnNext === 1 && lfnParts.length > 0 && shortNameChecksum(short11) === lfnSum) longName = lfnParts.join('');
      lfnParts = []; lfnNext = 0;
      if (attr & ATTR_VOLUME_ID) {
        if (isRoot) label = short11.toString('latin1').trimEnd();
        continue;
      }
      const shortName = displayShort(short11);
      if (shortName === '.' || shortName === '..') {
        if (isRoot) throw new FormatError(`'${shortName}' entry in the root directory`, absOff);
        continue;
      }
      const name = longName ?? displayShort(short11, data[off + 12]!);
      if (name === '' || name.includes('/') || name.includes('\0')) throw new FormatError(`invalid name '${name}'`, absOff);
      const key = nameKey(name);
      if (names.has(key)) throw new FormatError(`duplicate name '${name}'`, absOff);
      names.add(key);
      const firstCluster = (data.readUInt16LE(off + 20) << 16 | data.readUInt16LE(off + 26)) >>> 0;
      const isDirectory = (attr & ATTR_DIRECTORY) !== 0;
      const size = isDirectory ? 0 : data.readUInt32LE(off + 28);
      const p = prefix ? `${prefix}/${name}` : name;
      entries.push({ path: p, name, shortName, isDirectory, size, firstCluster });
      if (isDirectory) {
        if (firstCluster === 0) throw new FormatError(`directory '${p}' has no cluster`, absOff);
        walk(firstCluster, p, depth + 1, false);
      }
    }
  };
  walk(rootCluster, '', 0, true);

  const byPath = new Map<string, Fat32Entry>();
  for (const e of entries) byPath.set(nameKey(e.path), e);
  return {
    geometry,
    label,
    volumeId: bs.readUInt32LE(67),
    entries,
    readFile(path: string): Buffer {
      const key = nameKey(path.split('/').filter((x) => x !== '').join('/'));
      const e = byPath.get(key);
      if (e === undefined) throw new BootcfsError('ENOENT', `no file '${path}' in the FAT volume`);
      if (e.isDirectory) throw new BootcfsError('EINVAL', `'${path}' is a directory`);
      if (e.size === 0) {
        if (e.firstCluster !== 0 && !inRange(e.firstCluster)) throw new FormatError(`'${e.path}': cluster ${e.firstCluster} out of range`, 0);
        return Buffer.alloc(0);
      }
      const need = Math.ceil(e.size / clusterSize);
      const chain = chainOf(e.firstCluster, need, `'${e.path}'`);
      if (chain.length < need) throw new FormatError(`'${e.path}': chain of ${chain.length} clusters holds less than ${e.size} bytes`, fatOffset + e.firstCluster * 4);
      return readChain(chain, e.size, `'${e.path}'`);
    },
  };
}
