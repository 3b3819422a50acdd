import { parseArgs, type ParseArgsConfig } from 'node:util';
import { BootcfsError } from '../errors.js';

/** A CLI verb. `run` returns the process exit code; thrown BootcfsErrors become `bootcfs: msg`, exit 1. */
export interface Command {
  name: string;
  summary: string;
  /** Full help text printed by `--help`. */
  help: string;
  run(argv: string[]): Promise<number>;
}

/** Thrown for bad command-line usage: printed with a hint to use --help, exit code 2. */
export class UsageError extends BootcfsError {
  constructor(message: string) {
    super('EINVAL', message);
    this.name = 'UsageError';
  }
}

type Options = NonNullable<ParseArgsConfig['options']>;
type CliConfig<O extends Options> = { args: string[]; options: O; allowPositionals: true; strict: true };
export type ParsedCli<O extends Options> = ReturnType<typeof parseArgs<CliConfig<O>>>;

/** getopt_long-like parsing: `--opt=v` and `--opt v`, interleaved positionals, `-` as a positional. */
export function parseCli<const O extends Options>(argv: string[], options: O): ParsedCli<O> {
  try {
    return parseArgs<CliConfig<O>>({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify a positional.*$/s, ''));
  }
}

/** Write everything to a fd-backed stream and wait until it is flushed. */
export async function writeOut(stream: NodeJS.WritableStream, data: string | Uint8Array): Promise<void> {
  if (data.length === 0) return;
  await new Promise<void>((resolve, reject) => {
    stream.write(data, (err) => (err ? reject(err) : resolve()));
  });
}
