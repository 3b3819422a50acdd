#!/bin/sh
# bootcfs-boot-report — what a booted bootcfs system can verify about itself, printed on the console as
# `BOOTCFS-REPORT <what> <value>` lines (run once per boot by bootcfs-boot-report.service in the demo image;
# the end-to-end tests and `npm run demo` read them from the serial console).
#   cmdline      /proc/cmdline (composefs=<digest> names the image)
#   root         source, type and options of / (composefs:<digest>, overlay, verity=require)
#   secureboot   the firmware's SecureBoot variable (1 = enforced)
#   verity       every object in /sysroot/composefs/objects measured by the kernel: count, how many carry
#                fs-verity with the digest their name says, the first that does not
#   canary       sha256 of /usr/share/bootcfs-demo/canary.txt, or the read error (EIO when its object was altered)
#   etc          /etc/bootcfs-demo.conf (an /etc default that v2 of the image changes)
#   esp          what is mounted at /boot once it is accessed (the ESP, mounted by systemd-gpt-auto-generator)
#   status       `bootcfs status --json` on one line
#   status-ms    wall time of a second (warm) `bootcfs status --json`, and of `node -e 0` (the runtime's floor)
#   uptime       seconds since the kernel started, when this report ran (multi-user reached)
# Test hook: when /etc/bootcfs-test-hook exists and is executable (tests put it there offline; the image
# has none), it runs after these lines and before `done`, each line of its output prefixed `BOOTCFS-HOOK `.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
r() { printf 'BOOTCFS-REPORT %s\n' "$*"; }
up=$(cut -d' ' -f1 /proc/uptime)
r "uptime $up"
r "cmdline $(cat /proc/cmdline)"
r "root $(findmnt -n -o SOURCE,FSTYPE,OPTIONS / | tr -s ' ' ' ')"
sb=$(od -An -tu1 -j4 -N1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c 2>/dev/null | tr -d ' ')
r "secureboot ${sb:-unknown}"
objs=/sysroot/composefs/objects
verity=$(find "$objs" -type f -print0 | xargs -0 -r fsverity measure 2>&1 | awk -v pre="$objs/" '
  { n++
    if ($1 ~ /^sha(256|512):[0-9a-f]+$/ && index($2, pre) == 1) {
      name = substr($2, length(pre) + 1); sub("/", "", name)
      split($1, m, ":")
      if (m[2] == name) { ok++; next }
    }
    if (bad == "") bad = $0
  }
  END { printf "objects=%d ok=%d bad=%d first-bad=%s\n", n, ok, n - ok, (bad == "" ? "none" : bad) }')
r "verity $verity"
c=$(sha256sum /usr/share/bootcfs-demo/canary.txt 2>&1 | head -1)
r "canary $c"
r "etc $(grep -v '^#' /etc/bootcfs-demo.conf 2>&1 | tr '\n' ' ')"
ls /boot/loader >/dev/null 2>&1
r "esp $(findmnt -n -o SOURCE,FSTYPE /boot 2>&1 | tail -1)"
st=$(bootcfs status --json 2>&1 | tr -d '\n' | tr -s ' ' ' ')
r "status $st"
ms() { s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
r "status-ms warm=$(ms bootcfs status --json) node-floor=$(ms node -e 0)"
if [ -x /etc/bootcfs-test-hook ]; then
  /etc/bootcfs-test-hook 2>&1 | sed -u 's/^/BOOTCFS-HOOK /'
fi
r "done"
