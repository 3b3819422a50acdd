/**
 * Reading a UKI back: the section table with sizes, addresses, SHA-256 of each section's content and the
 * text of the text sections, plus the report formats of `ukify inspect` (plain text and JSON, byte-identical
 * to ukify 257's output for the same selection of sections).
 */
import { createHash } from 'node:crypto';
import { parsePe } from '../pe/pe.js';

/** ukify's DEFAULT_SECTIONS_TO_SHOW: the UKI sections and how they are shown. */
export const UKI_SECTION_KINDS: Readonly<Record<string, 'text' | 'binary'>> = {
  '.linux': 'binary', '.initrd': 'binary', '.ucode': 'binary', '.splash': 'binary', '.dtb': 'binary',
  '.dtbauto': 'binary', '.hwids': 'binary', '.cmdline': 'text', '.osrel': 'text', '.uname': 'text',
  '.pcrpkey': 'text', '.pcrsig': 'text', '.sbat': 'text', '.sbom': 'binary', '.profile': 'text',
};

export interface UkiSectionInfo {
  name: string;
  /** Content size: min(VirtualSize, SizeOfRawData). */
  size: number;
  virtualAddress: number;
  virtualSize: number;
  sizeOfRawData: number;
  pointerToRawData: number;
  characteristics: number;
  /** Hex SHA-256 of the `size` content bytes. */
  sha256: string;
  /** For text sections: the content with trailing NULs removed and inner NULs shown as `\0`
   * ("(not valid UTF-8)" if it is not UTF-8). */
  text?: string;
  /** Whether ukify shows this section by default (a known UKI section). */
  ukiSection: boolean;
}

export interface UkiInfo {
  sections: UkiSectionInfo[];
}

function sectionText(data: Buffer): string {
  let end = data.length;
  while (end > 0 && data[end - 1] === 0) end--;
  const parts: Buffer[] = [];
  const body = data.subarray(0, end);
  let start = 0;
  for (let i = 0; i < body.length; i++) {
    if (body[i] === 0) {
      parts.push(body.subarray(start, i), Buffer.from('\\0'));
      start = i + 1;
    }
  }
  parts.push(body.subarray(start));
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(parts));
  } catch {
    return '(not valid UTF-8)';
  }
}

/** The section table of a PE image (a UKI), with content digests and texts. Throws FormatError on bad input. */
export function inspectUki(buf: Buffer): UkiInfo {
  const pe = parsePe(buf);
  const sections = pe.sections.map((s): UkiSectionInfo => {
    const size = Math.min(s.virtualSize, s.sizeOfRawData);
    const data = buf.subarray(s.pointerToRawData, s.pointerToRawData + size);
    const kind = UKI_SECTION_KINDS[s.name];
    const info: UkiSectionInfo = {
      name: s.name, size, virtualAddress: s.virtualAddress, virtualSize: s.virtualSize, sizeOfRawData: s.sizeOfRawData,
      pointerToRawData: s.pointerToRawData, characteristics: s.characteristics, sha256: createHash('sha256').update(data).digest('hex'),
      ukiSection: kind !== undefined,
    };
    if (kind === 'text') info.text = sectionText(data);
    return info;
  });
  return { sections };
}

/** Python json.dumps of a string (ensure_ascii=True). */
function pyJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ch = s[i]!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

export interface InspectFormatOptions {
  /** Show every section, not only the UKI ones (ukify --all). */
  all?: boolean;
}

function shown(info: UkiInfo, opts: InspectFormatOptions): UkiSectionInfo[] {
  // ukify builds a dict keyed by name: a later section of the same name replaces the value of the
  // earlier one but keeps its position.
  const order: string[] = [];
  const byName = new Map<string, UkiSectionInfo>();
  for (const s of info.sections) {
    if (!opts.all && !s.ukiSection) continue;
    if (!byName.has(s.name)) order.push(s.name);
    byName.set(s.name, s);
  }
  return order.map((n) => byName.get(n)!);
}

/** ukify inspect's plain-text report (without --json). Like ukify, every shown section is printed, duplicates included. */
export function formatInspectText(info: UkiInfo, opts: InspectFormatOptions = {}): string {
  let out = '';
  for (const s of info.sections) {
    if (!opts.all && !s.ukiSection) continue;
    out += `${s.name}:\n  size: ${s.size} bytes\n  sha256: ${s.sha256}\n`;
    if (s.text !== undefined) {
      const body = s.text.replace(/\s+$/u, '');
      const indented = body.split(/(?<=\n)/).map((l) => (l.trim() === '' ? l : `    ${l}`)).join('');
      out += `  text:\n${indented}\n`;
    }
  }
  return out;
}

/** ukify inspect --json=short|pretty (Python json.dump, no trailing newline). */
export function formatInspectJson(info: UkiInfo, style: 'short' | 'pretty', opts: InspectFormatOptions = {}): string {
  const secs = shown(info, opts);
  const fields = (s: UkiSectionInfo): [string, string][] => {
    const f: [string, string][] = [['size', String(s.size)], ['sha256', pyJsonString(s.sha256)]];
    if (s.text !== undefined) f.push(['text', pyJsonString(s.text)]);
    return f;
  };
  if (style === 'short') {
    return `{${secs.map((s) => `${pyJsonString(s.name)}: {${fields(s).map(([k, v]) => `"${k}": ${v}`).join(', ')}}`).join(', ')}}`;
  }
  if (secs.length === 0) return '{}';
  const body = secs.map((s) => `    ${pyJsonString(s.name)}: {\n${fields(s).map(([k, v]) => `        "${k}": ${v}`).join(',\n')}\n    }`);
  return `{\n${body.join(',\n')}\n}`;
}
