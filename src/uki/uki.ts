/**
 * Unified Kernel Images (UAPI UKI specification): the systemd-stub EFI program with the kernel, initrd,
 * command line, os-release, ... appended as PE sections. `buildUki` produces the same bytes as
 * `ukify build` (systemd 257) for the same inputs, unsigned and without PCR signatures:
 *
 * - Sections, in ukify's order: .osrel .cmdline .dtb .hwids .uname .splash .pcrpkey .linux .initrd .ucode,
 *   then caller-supplied extra sections, then .sbat. A text input that is empty is left out; a binary
 *   input (Buffer) is always added, even when empty (ukify tests `if content:` on a str vs. a Path).
 * - .sbat is the merge of the stub's and the kernel's .sbat sections (header line dropped from each) and
 *   the given SBAT texts (default: ukify's "uki,1,UKI,..." entry), and replaces the stub's own .sbat in place.
 * - Several initrds are concatenated, each zero-padded to a multiple of 4 bytes; a single one is used as is.
 * - .linux is marked CNT_CODE|MEM_READ, all others CNT_INITIALIZED_DATA|MEM_READ. If the kernel is a PE
 *   image without NX_COMPAT, NX_COMPAT is cleared in the UKI's DllCharacteristics.
 * - A kernel that is not a PE image but gzip- or zstd-compressed is decompressed first, as ukify does.
 * - .uname, when not given, is read from the x86 boot header's kernel version string, or else found as
 *   "Linux version X (" in the (decompressed) kernel, like ukify's scrape_x86 / scrape_generic. ukify's
 *   middle method (readelf --notes on an ELF vmlinux) is not implemented: for ELF kernels we go straight to
 *   the text search, which finds the same version string in practice.
 */
import { gunzipSync } from 'node:zlib';
import { BootcfsError } from '../errors.js';
import { addSections, IMAGE_DLLCHARACTERISTICS_NX_COMPAT, type NewSection } from '../pe/pe-writer.js';
import { parsePe, SCN_CNT_CODE, SCN_CNT_INITIALIZED_DATA, SCN_MEM_READ } from '../pe/pe.js';
import { zstdDecompress } from '../util/zstd.js';

export const DEFAULT_UKI_STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';

/** The SBAT line ukify adds for the UKI itself when no --sbat is given. */
export const UKI_SBAT = `sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md
uki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/
`;
const SBAT_HEADER = 'sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md';

export interface UkiInputs {
  /** The systemd-stub image (linuxx64.efi.stub). */
  stub: Buffer;
  /** The kernel (bzImage / EFI-stub kernel; gzip/zstd-compressed kernels are decompressed). */
  linux: Buffer;
  initrds?: Buffer[];
  /** Kernel command line: a string is encoded as UTF-8 and left out when empty; a Buffer is used verbatim. */
  cmdline?: string | Buffer;
  /** os-release text (string, left out when empty) or file content (Buffer). */
  osRelease?: string | Buffer;
  /** Kernel release; undefined = detect from the kernel (left out if not found); '' = no .uname. */
  uname?: string;
  /** SBAT texts, each starting with the "sbat,1,..." header line (default: ukify's UKI entry). */
  sbat?: string[];
  splash?: Buffer;
  dtb?: Buffer;
  /** Public key for PCR signatures (.pcrpkey); PCR signing itself (.pcrsig) is not done here. */
  pcrpkey?: Buffer;
  /** CPU microcode initrd (.ucode). */
  microcode?: Buffer;
  /** Extra sections (ukify --section NAME:CONTENT), added after .ucode and before .sbat. */
  extraSections?: { name: string; data: Buffer }[];
}

export interface BuiltUki {
  image: Buffer;
  /** The .uname used (given or detected), if any. */
  uname: string | undefined;
  /** The section names added, in order. */
  sections: string[];
}

/** ukify's whitespace normalisation of a command line given as a string: Python's `' '.join(s.split())`. */
export function normalizeCmdline(s: string): string {
  return s.split(PY_WHITESPACE).filter((w) => w !== '').join(' ');
}
// Characters for which Python's str.isspace() is true.
const PY_WHITESPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/u;

/** Python's str.splitlines() (no line ends kept). */
export function pySplitlines(s: string): string[] {
  const lines = s.split(/\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/u);
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/**
 * Lenient "is this a PE image" test, approximating when python-pefile (fast_load) accepts a file: MZ
 * header, e_lfanew inside the file, PE signature, a PE32/PE32+ optional header. Returns the
 * DllCharacteristics, or undefined when not a PE image.
 */
export function peDllCharacteristics(buf: Buffer): number | undefined {
  if (buf.length < 64 || buf.readUInt16LE(0) !== 0x5a4d) return undefined;
  const lfanew = buf.readUInt32LE(0x3c);
  if (lfanew + 24 + 72 > buf.length) return undefined;
  if (buf.readUInt32LE(lfanew) !== 0x00004550) return undefined;
  const magic = buf.readUInt16LE(lfanew + 24);
  if (magic !== 0x10b && magic !== 0x20b) return undefined;
  return buf.readUInt16LE(lfanew + 24 + 70);
}

/** If `linux` is not a PE image but a gzip or zstd stream, its decompressed content (as ukify does). */
export function maybeDecompressKernel(linux: Buffer): Buffer {
  if (peDllCharacteristics(linux) !== undefined) return linux;
  if (linux.length >= 2 && linux[0] === 0x1f && linux[1] === 0x8b) return gunzipSync(linux);
  if (linux.length >= 4 && linux.readUInt32LE(0) === 0xfd2fb528) return zstdDecompress(linux);
  const magic = linux.subarray(0, 4);
  const unsupported: [Buffer, string][] = [
    [Buffer.from([0x02, 0x21, 0x4c, 0x18]), 'lz4'], [Buffer.from([0x04, 0x22, 0x4d, 0x18]), 'lz4'],
    [Buffer.from('BZh'), 'bzip2'], [Buffer.from([0x5d, 0x00, 0x00]), 'lzma'], [Buffer.from([0x89, 0x4c, 0x5a, 0x4f]), 'lzo'],
  ];
  for (const [m, name] of unsupported) {
    if (magic.subarray(0, m.length).equals(m)) throw new BootcfsError('ENOTSUP', `the kernel is ${name}-compressed; decompress it first`);
  }
  return linux;
}

const X86_VERSION = /^([a-z0-9._+-]+) \([^ )]+\) #/;
const TEXT_VERSION = /Linux version (\d\.[^ \t\n\r\f\v]+) \(/;

function decodeUtf8(b: Buffer): string | undefined {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch {
    return undefined;
  }
}

/** The kernel release of a kernel image, found the way ukify's Uname.scrape does; undefined if none. */
export function detectUname(linux: Buffer): string | undefined {
  // x86 real-mode kernel header: "HdrS" at 0x202, kernel_version pointer (relative to 0x200) at 0x20e.
  if (linux.length >= 0x210 && linux.subarray(0x202, 0x206).toString('latin1') === 'HdrS') {
    const start = 0x200 + linux.readUInt16LE(0x20e);
    let text = linux.subarray(Math.min(start, linux.length), Math.min(start + 128, linux.length));
    const nul = text.indexOf(0);
    if (nul >= 0) text = text.subarray(0, nul);
    const s = decodeUtf8(text);
    const m = s === undefined ? null : X86_VERSION.exec(s);
    if (m) return m[1];
  }
  // Generic: "Linux version X (" anywhere in the decompressed kernel.
  let data: Buffer;
  if (linux.subarray(0, 4).toString('latin1') === '\x7fELF') data = linux;
  else if (linux.length >= 2 && linux[0] === 0x1f && linux[1] === 0x8b) data = gunzipSync(linux);
  else if (linux.length >= 4 && linux.readUInt32LE(0) === 0xfd2fb528) data = zstdDecompress(linux);
  else if (linux.length >= 2 && linux.readUInt16LE(0) === 0x5a4d) data = linux.subarray(8);
  else return undefined;
  const m = TEXT_VERSION.exec(data.toString('latin1'));
  return m ? decodeUtf8(Buffer.from(m[1]!, 'latin1')) : undefined;
}

/** The lines after the header line of each valid .sbat section of a PE image (none if not a PE image). */
function sbatEntriesOfPe(image: Buffer): string[] {
  let pe;
  try {
    pe = parsePe(image);
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const s of pe.sections) {
    if (s.name !== '.sbat') continue;
    // pefile's get_data(): the whole raw data, NULs stripped at the end.
    let raw = image.subarray(s.pointerToRawData, s.pointerToRawData + s.sizeOfRawData);
    let end = raw.length;
    while (end > 0 && raw[end - 1] === 0) end--;
    raw = raw.subarray(0, end);
    const lines = pySplitlines(raw.toString('utf8'));
    if (lines.length === 0) throw new BootcfsError('EFORMAT', 'a .sbat section is empty');
    if (!lines[0]!.startsWith('sbat,')) continue;
    out.push(...lines.slice(1));
  }
  return out;
}

/** ukify's merge_sbat: one header line, then the entries of the stub, the kernel and the given texts. */
export function mergeSbat(inputPes: Buffer[], texts: string[]): string {
  const entries: string[] = [];
  for (const pe of inputPes) entries.push(...sbatEntriesOfPe(pe));
  for (const t of texts) {
    const lines = pySplitlines(t);
    if (lines.length === 0) throw new BootcfsError('EINVAL', 'an SBAT text is empty');
    if (!lines[0]!.startsWith('sbat,')) continue;
    entries.push(...lines.slice(1));
  }
  return `${SBAT_HEADER}\n${entries.join('\n')}\n\x00`;
}

/** Concatenation of several initrds, each padded to 4 bytes (a single initrd is returned as is). */
export function joinInitrds(initrds: readonly Buffer[]): Buffer | undefined {
  if (initrds.length === 0) return undefined;
  if (initrds.length === 1) return initrds[0];
  const parts: Buffer[] = [];
  for (const b of initrds) {
    parts.push(b);
    const pad = (4 - (b.length % 4)) % 4;
    if (pad) parts.push(Buffer.alloc(pad));
  }
  return Buffer.concat(parts);
}

function content(v: string | Buffer | undefined): Buffer | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'string') return v === '' ? undefined : Buffer.from(v, 'utf8');
  return v;
}

/** Builds an unsigned UKI, byte-identical to `ukify build` (systemd 257) for the same inputs. */
export function buildUkiDetailed(inp: UkiInputs): BuiltUki {
  const linux = maybeDecompressKernel(inp.linux);
  const uname = inp.uname === undefined ? detectUname(linux) : inp.uname;
  const joined = joinInitrds(inp.initrds ?? []);
  const list: [string, Buffer | undefined][] = [
    ['.osrel', content(inp.osRelease)],
    ['.cmdline', content(inp.cmdline)],
    ['.dtb', inp.dtb],
    ['.uname', content(uname)],
    ['.splash', inp.splash],
    ['.pcrpkey', inp.pcrpkey],
    ['.linux', linux],
    // A multi-initrd join that comes out empty is a falsy bytes object in ukify: left out.
    ['.initrd', joined !== undefined && joined.length === 0 && (inp.initrds?.length ?? 0) > 1 ? undefined : joined],
    ['.ucode', inp.microcode],
  ];
  const sections: NewSection[] = [];
  const seen = new Set<string>();
  const add = (name: string, data: Buffer) => {
    if (seen.has(name)) throw new BootcfsError('EINVAL', `duplicate section ${name}`);
    seen.add(name);
    sections.push({ name, data, characteristics: SCN_MEM_READ | (name === '.linux' ? SCN_CNT_CODE : SCN_CNT_INITIALIZED_DATA) });
  };
  for (const [name, data] of list) if (data !== undefined) add(name, data);
  for (const e of inp.extraSections ?? []) add(e.name, e.data);
  const sbatTexts = inp.sbat && inp.sbat.length > 0 ? inp.sbat : [UKI_SBAT];
  add('.sbat', Buffer.from(mergeSbat([inp.stub, linux], sbatTexts), 'utf8'));
  const dll = peDllCharacteristics(linux);
  const clear = dll !== undefined && (dll & IMAGE_DLLCHARACTERISTICS_NX_COMPAT) === 0 ? IMAGE_DLLCHARACTERISTICS_NX_COMPAT : 0;
  const image = addSections(inp.stub, sections, { clearDllCharacteristics: clear });
  return { image, uname: uname === '' ? undefined : uname, sections: sections.map((s) => s.name) };
}

/** Builds an unsigned UKI (see buildUkiDetailed). */
export function buildUki(inp: UkiInputs): Buffer {
  return buildUkiDetailed(inp).image;
}

export { inspectUki, formatInspectJson, formatInspectText, UKI_SECTION_KINDS, type UkiInfo, type UkiSectionInfo } from './inspect.js';
