/**
 * `npm run bench`: runs every benchmark, prints each figure as a ratio against the reference tool measured
 * in the same run, and writes bench/RESULTS.md. Benchmarks are never part of the test tiers.
 */
import { writeFileSync } from 'node:fs';
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
  if (only.length === 0) writeFileSync(path.join(repo, 'bench/RESULTS.md'), md);
  else console.log('(subset run: bench/RESULTS.md not rewritten)');
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
