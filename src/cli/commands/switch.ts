/**
 * `bootcfs switch IMAGE` (bootc switch): stage IMAGE as the next deployment.
 */
import { parseCli, UsageError, writeOut, type Command } from '../command.js';
import { CONTEXT_HELP } from './deploy-options.js';
import { runUpgrade, UPGRADE_OPTIONS } from './upgrade.js';

const HELP = `Usage: bootcfs switch [--apply] [--transport T] [--quiet] [--progress-fd N] [--json]
                      [--tls-verify=BOOL] [--root DIR] [--boot-dir DIR] IMAGE

Stage IMAGE as the next deployment, like upgrade (the /etc merge is checked first, the entries swap at
shutdown). IMAGE is a reference (oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE,
docker://HOST/NAME[:TAG]) or, as bootc takes it, HOST/NAME[:TAG] of a registry. Switching to the image
the current deployment runs says so and does nothing; an image with the same composefs digest as the
rollback deployment is refused (use bootcfs rollback).

Options:
  --apply              reboot after staging (systemctl reboot)
  --transport T        registry (default), oci, oci-archive, docker-archive: how IMAGE is read
  --quiet              no progress output on a terminal
  --progress-fd N      JSON-lines pull progress on file descriptor N
  --json               print the result as JSON (bootcfs extension)
  --tls-verify=BOOL    verify registry TLS certificates (default true)
${CONTEXT_HELP}`;

export const command: Command = {
  name: 'switch',
  summary: 'stage another image as the next deployment (bootc switch)',
  help: HELP,
  async run(argv) {
    const { values, positionals } = parseCli(argv, { ...UPGRADE_OPTIONS, transport: { type: 'string' } });
    if (values.help) {
      await writeOut(process.stdout, HELP);
      return 0;
    }
    if (positionals.length !== 1) throw new UsageError('switch takes one IMAGE');
    const t = values.transport;
    if (t !== undefined && !['registry', 'oci', 'oci-archive', 'docker-archive'].includes(t)) throw new UsageError(`--transport ${t}: registry, oci, oci-archive or docker-archive`);
    const { normalizeImageReference } = await import('../../deploy/upgrade.js');
    return runUpgrade(values, { target: normalizeImageReference(positionals[0]!, t) });
  },
};
