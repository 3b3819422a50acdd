/**
 * `bootcfs keys generate DIR`: a fresh PK/KEK/db Secure Boot hierarchy with ESLs, signed .auth updates and
 * the systemd-boot auto-enroll layout (DIR/loader/keys/auto).
 */
import { UsageError, parseCli, writeOut, type Command } from '../command.js';
import { generateSecureBootKeys, isGuid, isRsaKeyType } from '../../secureboot/index.js';

const GENERATE_HELP = `Usage: bootcfs keys generate DIR [--common-name NAME] [--owner-guid GUID] [--key-type rsa2048|rsa4096] [--days N] [--force]

Generate a Secure Boot key hierarchy in DIR (created if missing):
  {PK,KEK,db}.key    RSA private keys (PEM, mode 0600)
  {PK,KEK,db}.crt    self-signed certificates (PEM), .der the same in DER
  {PK,KEK,db}.esl    EFI signature lists (one certificate each, owned by GUID)
  {PK,KEK,db}.auth   signed variable updates: PK and KEK signed by PK, db signed by KEK
  loader/keys/auto/{PK,KEK,db}.auth
                     the layout systemd-boot auto-enrolls from (copy DIR/loader to the ESP and set
                     'secure-boot-enroll if-safe' or 'force' in loader/loader.conf)
  GUID.txt           the owner GUID

Options:
  --common-name NAME  certificate common name prefix (default "bootcfs Secure Boot"; " PK", " KEK", " db" appended)
  --owner-guid GUID   signature owner GUID (default: random)
  --key-type TYPE     rsa2048 (default) or rsa4096
  --days N            certificate validity in days (default 3650)
  --force             overwrite existing keys in DIR
  -h, --help          show this help
`;

const HELP = `Usage: bootcfs keys <generate> [options]

Secure Boot key tooling:
  generate   create PK/KEK/db keys, certificates, signature lists and signed .auth updates

Run 'bootcfs keys generate --help' for its options.
`;

async function generate(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli(argv, {
    'common-name': { type: 'string' },
    'owner-guid': { type: 'string' },
    'key-type': { type: 'string' },
    days: { type: 'string' },
    force: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    await writeOut(process.stdout, GENERATE_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('keys generate takes exactly one directory');
  const guid = values['owner-guid'];
  if (guid !== undefined && !isGuid(guid)) throw new UsageError(`invalid --owner-guid '${guid}'`);
  const keyType = values['key-type'] ?? 'rsa2048';
  if (!isRsaKeyType(keyType)) throw new UsageError(`invalid --key-type '${keyType}' (rsa2048 or rsa4096)`);
  let days: number | undefined;
  if (values.days !== undefined) {
    days = Number(values.days);
    if (!/^[1-9][0-9]{0,5}$/.test(values.days)) throw new UsageError(`invalid --days '${values.days}'`);
  }
  const name = values['common-name'];
  if (name !== undefined && (name.length === 0 || name.length > 60)) throw new UsageError('--common-name must be 1..60 characters');
  const keys = await generateSecureBootKeys(positionals[0]!, {
    ...(name !== undefined ? { commonName: name } : {}),
    ...(guid !== undefined ? { ownerGuid: guid } : {}),
    ...(days !== undefined ? { days } : {}),
    keyType,
    force: values.force ?? false,
  });
  await writeOut(process.stdout, `generated PK, KEK and db in ${keys.dir} (owner GUID ${keys.ownerGuid})\n`);
  return 0;
}

export const command: Command = {
  name: 'keys',
  summary: 'Secure Boot keys: generate PK/KEK/db with signature lists and signed .auth updates',
  help: HELP,
  async run(argv: string[]): Promise<number> {
    const [sub, ...rest] = argv;
    if (sub === '--help' || sub === '-h') {
      await writeOut(process.stdout, HELP);
      return 0;
    }
    if (sub === undefined) throw new UsageError('keys: missing subcommand (generate)');
    if (sub === 'generate') return generate(rest);
    throw new UsageError(`unknown keys subcommand '${sub}'`);
  },
};
