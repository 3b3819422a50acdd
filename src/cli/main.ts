#!/usr/bin/env node
/**
 * bootcfs CLI entry point. Thin: parses the verb and hands off to a command module; every command is a
 * wrapper around the typed library API. Errors from bad input print `bootcfs: <message>` (no stack).
 */
import { BootcfsError } from '../errors.js';
import { UsageError } from './command.js';
import { commands } from './registry.js';

const TOP_HELP = () => `bootcfs — composefs images, fs-verity and sealed boot for bootc systems

Usage: bootcfs <command> [options...]

Commands:
${Object.entries(commands).map(([name, c]) => `  ${name.padEnd(18)} ${c.summary}`).join('\n')}

Run 'bootcfs <command> --help' for a command's options.
`;

export async function main(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === undefined || verb === '--help' || verb === '-h' || verb === 'help') {
    process.stdout.write(TOP_HELP());
    return verb === undefined ? 2 : 0;
  }
  if (verb === '--version' || verb === '-V') {
    const { VERSION } = await import('../version.js');
    process.stdout.write(`bootcfs ${VERSION}\n`);
    return 0;
  }
  const entry = Object.hasOwn(commands, verb) ? commands[verb] : undefined;
  if (!entry) {
    process.stderr.write(`bootcfs: unknown command '${verb}'\n\n${TOP_HELP()}`);
    return 2;
  }
  const cmd = await entry.load();
  if (rest.length === 1 && (rest[0] === '--help' || rest[0] === '-h')) {
    process.stdout.write(cmd.help.endsWith('\n') ? cmd.help : `${cmd.help}\n`);
    return 0;
  }
  return cmd.run(rest);
}

function report(e: unknown): number {
  if (e instanceof UsageError) {
    process.stderr.write(`bootcfs: ${e.message}\nTry 'bootcfs --help' for more information.\n`);
    return 2;
  }
  if (e instanceof BootcfsError) {
    process.stderr.write(`bootcfs: ${e.message}\n`);
    return 1;
  }
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === 'string' && typeof err.message === 'string') {
    // Node system errors (ENOENT on an input path, EACCES, ...): message only
    process.stderr.write(`bootcfs: ${err.message}\n`);
    return 1;
  }
  process.stderr.write(`bootcfs: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
  return 70;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.exitCode = report(e);
  },
);
