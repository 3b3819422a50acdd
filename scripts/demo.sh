#!/bin/bash
# The main job, on the built-in default: the whole sealed chain in one command.
#   1. build the demo OS image from Debian packages (scripts/build-os-image.sh; cached after the first run)
#   2. generate fresh Secure Boot keys (bootcfs keys generate: PK, KEK, db)
#   3. seal the image (bootcfs container build-sealed: composefs digest → UKI command line, signed with db)
#   4. install it to a disk image (bootcfs install to-disk: GPT, ESP with systemd-boot + the UKI, ext4 root
#      with the composefs repository)
#   5. boot it in QEMU (TCG) under OVMF with the keys enrolled and Secure Boot enforced, read the boot report
#      the demo image prints on its serial console, and print a verified summary.
# Needs root (the OS image build chroots; the disk's files belong to other users) and the Debian packages of
# scripts/install-deps.sh, which this script runs first. First run: ~10 min (OS image ~7 min); later ~4 min.
#
# Usage: scripts/demo.sh [--digest-only [SOURCE_DIR]]
#   --digest-only   the quick version (no root, no packages): a composefs image + object store from a
#                   sample tree and its fs-verity digest, checked against mkcomposefs when installed.
# Env: BOOTCFS_DEMO_OUT (default /var/tmp/bootcfs-demo): keys, sealed image, disk image, serial log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "${1:-}" = --digest-only ]; then
  shift
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then bash scripts/npm-ci.sh; fi
  npm run -s build
  out=${BOOTCFS_DEMO_OUT:-$(mktemp -d /tmp/bootcfs-demo.XXXXXX)}
  src=${1:-}
  if [ -z "$src" ]; then
    src=$out/sample-tree
    rm -rf "$src"; mkdir -p "$src"/{etc,usr/bin,usr/lib/os-release.d,var/empty}
    printf 'NAME="bootcfs demo"\nID=bootcfs-demo\nVERSION_ID=1\n' > "$src/usr/lib/os-release"
    ln -s ../usr/lib/os-release "$src/etc/os-release"
    printf 'hello from a composefs image\n' > "$src/etc/motd"
    for i in $(seq 1 2000); do printf 'line %05d of a reproducible sample binary\n' "$i"; done > "$src/usr/bin/sample"
    chmod 755 "$src/usr/bin/sample"
    find "$src" -exec touch -h -d '2026-01-01 00:00:00 UTC' {} +
  fi
  rm -rf "$out/objects" "$out/image.cfs"
  echo "source tree:   $src"
  digest=$(./bin/bootcfs mkcomposefs --digest-store="$out/objects" --print-digest "$src" "$out/image.cfs")
  echo "image:         $out/image.cfs ($(stat -c %s "$out/image.cfs") bytes)"
  echo "object store:  $out/objects ($(find "$out/objects" -type f | wc -l) objects)"
  ref=${BOOTCFS_REF:-/opt/bootcfs-ref}/composefs/bin/mkcomposefs
  if [ -x "$ref" ]; then
    if [ "$("$ref" --print-digest-only "$src")" = "$digest" ]; then echo "reference check: mkcomposefs 1.0.8 computes the same digest";
    else echo "reference check: MISMATCH with mkcomposefs 1.0.8" >&2; exit 1; fi
  fi
  echo "fs-verity digest (sha256) of the image — the kernel argument would be composefs=$digest"
  echo "$digest"
  exit 0
fi
[ $# -eq 0 ] || { echo "usage: $0 [--digest-only [SOURCE_DIR]]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "demo: run as root (the OS image build chroots; install to-disk writes files owned by other users); 'npm run demo -- --digest-only' needs no root" >&2; exit 1; }

T0=$(date +%s.%N)
step() { printf '\n== %s\n' "$*" >&2; }
secs() { printf '%.1f' "$(echo "$(date +%s.%N) - $1" | bc)"; }
step "dependencies (scripts/install-deps.sh: Debian packages, reference tools, npm ci, build)"
bash scripts/install-deps.sh > /tmp/bootcfs-demo-deps.log 2>&1 || { tail -30 /tmp/bootcfs-demo-deps.log >&2; exit 1; }

OUT=${BOOTCFS_DEMO_OUT:-/var/tmp/bootcfs-demo}
rm -rf "$OUT"; mkdir -p "$OUT"
BC=$ROOT/bin/bootcfs

step "1/5 demo OS image (Debian trixie, kernel 6.12, systemd, dracut initramfs with bootcfs setup-root)"
t=$(date +%s.%N)
LAYOUT=$(bash scripts/build-os-image.sh)
echo "   $LAYOUT ($(secs "$t") s)" >&2

step "2/5 fresh Secure Boot keys"
"$BC" keys generate "$OUT/keys" --common-name "bootcfs demo" > /dev/null
GUID=$(cat "$OUT/keys/GUID.txt")
echo "   $OUT/keys (PK, KEK, db; owner $GUID)" >&2

step "3/5 seal: composefs digest → UKI command line, UKI and systemd-boot signed with db"
t=$(date +%s.%N)
"$BC" container build-sealed "oci:$LAYOUT:v1" --output "oci:$OUT/sealed:v1" --key "$OUT/keys/db.key" --cert "$OUT/keys/db.crt" --json > "$OUT/sealed.json"
DIGEST=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).digest)' "$OUT/sealed.json")
echo "   composefs=$DIGEST ($(secs "$t") s)" >&2

step "4/5 install to-disk (GPT, ESP, ext4 root with the composefs repository)"
t=$(date +%s.%N)
"$BC" install to-disk --create 4G --boot-timeout 0 --source "oci:$OUT/sealed:v1" --json "$OUT/disk.img" > "$OUT/install.json"
T_INSTALL=$(secs "$t")
ESP_OFF=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).partitions[0].firstLba * 512)' "$OUT/install.json")
mcopy -n -i "$OUT/disk.img@@$ESP_OFF" "::/EFI/Linux/bootc/bootc_composefs-$DIGEST.efi" "$OUT/uki.efi"
SIG=$("$BC" sbverify --cert "$OUT/keys/db.crt" "$OUT/uki.efi" 2>&1 | tail -1)
echo "   $OUT/disk.img ($T_INSTALL s); UKI on the ESP: $SIG" >&2

step "5/5 boot under OVMF with Secure Boot enforced (QEMU TCG; the first boot also enables fs-verity on every object)"
virt-fw-vars -i /usr/share/OVMF/OVMF_VARS_4M.fd -o "$OUT/vars.fd" --set-pk "$GUID" "$OUT/keys/PK.crt" \
  --add-kek "$GUID" "$OUT/keys/KEK.crt" --add-db "$GUID" "$OUT/keys/db.crt" --secure-boot > /dev/null 2>&1
SERIAL=$OUT/serial.log
: > "$SERIAL"
t=$(date +%s.%N)
qemu-system-x86_64 -machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on -accel tcg -smp 1 -m 1536 \
  -display none -monitor none -nic none -no-reboot -serial "file:$SERIAL" \
  -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd \
  -drive "if=pflash,format=raw,unit=1,file=$OUT/vars.fd" \
  -drive "file=$OUT/disk.img,format=raw,if=virtio" &
QEMU=$!
trap 'kill $QEMU 2>/dev/null || true' EXIT
result=timeout
for _ in $(seq 1 1200); do
  if grep -q 'BOOTCFS-REPORT done' "$SERIAL"; then result=ok; break; fi
  if grep -q 'bootcfs-setup-root: FATAL' "$SERIAL"; then result=fatal; break; fi
  if grep -aqE 'Security Violation|Access Denied' "$SERIAL"; then result=refused; break; fi
  kill -0 $QEMU 2>/dev/null || { result=stopped; break; }
  sleep 1
done
T_BOOT=$(secs "$t")
sleep 1; kill $QEMU 2>/dev/null || true; wait $QEMU 2>/dev/null || true
trap - EXIT
tr -d '\r' < "$SERIAL" | sed 's/\x1b\[[0-9;?=]*[a-zA-Z]//g' > "$SERIAL.txt"
rep() { grep -a "BOOTCFS-REPORT $1 " "$SERIAL.txt" | tail -1 | sed "s/.*BOOTCFS-REPORT $1 //"; }
if [ "$result" != ok ]; then
  echo "demo: the boot did not complete ($result); serial console: $SERIAL.txt" >&2
  tail -25 "$SERIAL.txt" >&2
  exit 1
fi
FIRST=$(grep -aoE 'first boot: fs-verity enabled on [0-9]+ objects and checked \([0-9.]+s -> [0-9.]+s\)' "$SERIAL.txt" | tail -1 || true)
SETUP=$(grep -aoE 'bootcfs-setup-root: done at [0-9.]+s' "$SERIAL.txt" | tail -1 | grep -oE '[0-9.]+s' || true)
cat <<EOF

bootcfs demo: sealed boot verified
  image        oci:$LAYOUT:v1 (bootcfs demo OS, Debian trixie)
  composefs    $DIGEST
  signature    UKI on the ESP: $SIG (db key generated for this run)
  Secure Boot  SecureBoot=$(rep secureboot) (firmware variable, read in the guest)
  root         $(rep root | cut -d' ' -f1-2) $(rep root | grep -o 'verity=require' || echo 'WITHOUT verity=require')
  ESP          $(rep esp) at /boot (mounted by systemd-gpt-auto-generator)
  fs-verity    $(rep verity)
               ${FIRST:-verity already enabled}
  file check   canary.txt sha256 $(rep canary | cut -d' ' -f1)
  boot time    setup-root done at ${SETUP:-?} (kernel clock), multi-user + report at $(rep uptime) s uptime; $T_BOOT s wall from QEMU start (TCG, 1 CPU)
  install      $T_INSTALL s; total $(secs "$T0") s
  files        $OUT (serial console: $SERIAL.txt)
EOF
