/**
 * `npm run bench`: runs every benchmark, prints each figure as a ratio against the reference tool measured
 * in the same run, and writes bench/RESULTS.md. Benchmarks are never part of the test tiers.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResult } from './result.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');

interface Suite { name: string; load: () => Promise<{ run: () => Promise<BenchResult[]> }> }
const suites: Suite[] = [
  { name: 'fsverity', load: () => import('./fsverity.js') },
  { name: 'mkcomposefs', load: () => import('./mkcomposefs.js') },
  { name: 'oci-import', load: () => import('./oci-import.js') },
  { name: 'oci-memory', load: () => import('./oci-memory.js') },
  { name: 'build-sealed', load: () => import('./build-sealed.js') },
  { name: 'install', load: () => import('./install.js') },
  { name: 'day2', load: () => import('./day2.js') },
  { name: 'boot', load: () => import('./boot.js') },
];

/** A table cell: pipes would split the Markdown cell. */
function cell(s: string): string {
  return s.replace(/\|/g, '\\|');
}

function fmt(n: number): string {
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

async function main(): Promise<void> {
  const only = process.argv.slice(2);
  const rows: BenchResult[] = [];
  for (const s of suites) {
    if (only.length && !only.includes(s.name)) continue;
    console.log(`== ${s.name}`);
    const results = await (await s.load()).run();
    for (const r of results) {
      console.log(`${r.name}: ours ${fmt(r.ours)} ${r.unit}, reference ${fmt(r.reference)} ${r.unit}, ratio ${r.ratio.toFixed(2)}× (${r.higherIsBetter ? 'higher' : 'lower'} is better)${r.note ? ` — ${r.note}` : ''}`);
      rows.push(r);
    }
  }
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const md = [
    '# Benchmark results',
    '',
    `Written by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)}: ${os.cpus().length} × ${cpu}, ` +
      `${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, kernel ${os.release()}.`,
    'Each ratio compares bootcfs with the reference tool measured in the same run.',
    '',
    '| benchmark | bootcfs | reference | ratio (bootcfs/reference) | better | note |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${cell(r.name)} | ${fmt(r.ours)} ${r.unit} | ${fmt(r.reference)} ${r.unit} | **${r.ratio.toFixed(2)}×** | ${r.higherIsBetter ? 'higher' : 'lower'} | ${cell(r.note ?? '')} |`),
    '',
  ].join('\n');
  const out = path.join(repo, 'bench/RESULTS.md');
  if (only.length === 0) writeFileSync(out, md);
  else if (existsSync(out)) {
    // A subset run replaces its own rows (matched by benchmark name) and keeps the others.
    const fresh = new Map(rows.map((r) => [`| ${cell(r.name)} |`, md.split('\n').find((l) => l.startsWith(`| ${cell(r.name)} |`))!]));
    const lines = readFileSync(out, 'utf8').split('\n').map((l) => {
      const key = [...fresh.keys()].find((k) => l.startsWith(k));
      if (key === undefined) return l;
      const line = fresh.get(key)!;
      fresh.delete(key);
      return line;
    });
    let tableEnd = lines.length - 1;
    while (tableEnd >= 0 && !lines[tableEnd]!.startsWith('|')) tableEnd--;
    lines.splice(tableEnd + 1, 0, ...fresh.values());
    writeFileSync(out, lines.join('\n'));
    console.log(`(subset run: its rows in bench/RESULTS.md updated, the others kept)`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
