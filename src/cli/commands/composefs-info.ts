/**
 * `bootcfs composefs-info`: drop-in for libcomposefs 1.0.8's composefs-info. For valid images stdout is
 * byte-identical to the C tool (ls, objects, missing-objects, dump, measure-file, --basedir, --filter).
 * Differences, on purpose:
 *  - malformed images are rejected with `bootcfs: <path>: <reason> (at byte offset N)` and exit 1 — the C
 *    tool prints garbage for some and crashes on others;
 *  - measure-file of an empty file prints the kernel's digest (fs-verity of an empty file has an all-zero
 *    root hash), not libcomposefs's userspace value (composefs-format.md §1.1);
 *  - usage errors exit 2 (bootcfs convention) instead of 1.
 */
import { readFileSync } from 'node:fs';
import { BootcfsError } from '../../errors.js';
import { UsageError, parseCli, writeOut, type Command } from '../command.js';
import { formatLs, imageToTree, missingObjects, treeObjects } from '../../composefs/info.js';
import { fsverityDigestFile } from '../../fsverity/index.js';
import { writeDumpfile } from '../../dumpfile/write.js';
import type { ByteString } from '../../tree/model.js';

const HELP = `Usage: bootcfs composefs-info [--basedir=PATH] [--filter=NAME]... COMMAND IMAGES...

Inspect composefs images (output identical to libcomposefs's composefs-info).

Commands:
  ls                print every path; directories end in "/", symlinks show "-> TARGET",
                    external files "@ BACKING-PATH"
  objects           print the backing-file paths the images reference (sorted, unique)
  missing-objects   the same, only those not present under --basedir
  dump              print the images as composefs dumpfiles (composefs-dump(5))
  measure-file      print the fs-verity sha256 digest of each FILE given instead of IMAGES

Options:
  --basedir=PATH    object store directory for missing-objects
  --filter=NAME     only read top-level entries with this name (repeatable)
  -h, --help        show this help

Malformed images are rejected with an error (exit 1) rather than printed.
`;

const COMMANDS = new Set(['ls', 'objects', 'missing-objects', 'dump', 'measure-file']);

function latin1(s: ByteString): Buffer {
  return Buffer.from(s, 'latin1');
}

function readImage(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new BootcfsError(err.code === 'ENOENT' ? 'ENOENT' : 'EIO', `failed to open '${path}': ${err.message}`);
  }
}

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli(argv, {
    basedir: { type: 'string' },
    filter: { type: 'string', multiple: true },
  });
  const [verb, ...files] = positionals;
  if (verb === undefined) throw new UsageError('no command specified (ls, objects, missing-objects, dump or measure-file)');
  if (!COMMANDS.has(verb)) throw new UsageError(`unknown command '${verb}'`);
  for (const f of values.filter ?? []) {
    if (f.includes('/')) throw new UsageError(`filter must be a single name: ${f}`);
  }
  if (files.length === 0) throw new UsageError(verb === 'measure-file' ? 'no files specified' : 'no image path specified');

  if (verb === 'measure-file') {
    for (const file of files) {
      const digest = await fsverityDigestFile(file, 'sha256');
      await writeOut(process.stdout, `${digest.toString('hex')}\n`);
    }
    return 0;
  }

  // like the C tool, a --basedir that is not a directory is an error whatever the command
  if (values.basedir !== undefined) missingObjects([], values.basedir);
  // --filter names come from argv: treat them as raw bytes like the C tool does
  const filter = values.filter?.map((f) => Buffer.from(f, 'utf8').toString('latin1'));
  const objects = new Set<ByteString>();
  for (const path of files) {
    const image = readImage(path);
    let fs;
    try {
      fs = imageToTree(image, { mode: 'c', filter });
    } catch (e) {
      if (e instanceof BootcfsError) throw new BootcfsError(e.code, `${path}: ${e.message}`, { cause: e });
      throw e;
    }
    if (verb === 'ls') await writeOut(process.stdout, latin1(formatLs(fs)));
    else if (verb === 'dump') {
      await writeOut(process.stdout, writeDumpfile(fs));
    } else for (const o of treeObjects(fs)) objects.add(o);
  }
  if (verb === 'objects' || verb === 'missing-objects') {
    let list = [...objects].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    if (verb === 'missing-objects') list = missingObjects(list, values.basedir);
    await writeOut(process.stdout, latin1(list.map((o) => `${o}\n`).join('')));
  }
  return 0;
}

export const command: Command = {
  name: 'composefs-info',
  summary: 'inspect composefs images (ls, objects, missing-objects, dump, measure-file)',
  help: HELP,
  run,
};
