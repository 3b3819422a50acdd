#!/bin/sh
# bootcfs-setup-root — mounts the composefs root in the initramfs (run by bootcfs-setup-root.service).
#
# Runs after systemd mounted the physical root at /sysroot (found by the discoverable-partitions root type,
# or root=) and before initrd-root-fs.target. Reads the LAST composefs=<hex> (or composefs=?<hex>) from the
# kernel command line and replaces /sysroot with:
#   /         overlayfs "composefs:<digest>": lowerdir = the EROFS image composefs/images/<digest> (read-only)
#             :: the object store composefs/objects (data-only layer), metacopy=on, redirect_dir=on and, unless
#             composefs=?, verity=require (every object's fs-verity digest is checked against the image)
#   /etc /var bind mounts of state/deploy/<digest>/{etc,var} on the physical root (writable)
#   /sysroot  the physical root, read-only
# Sealed mode (composefs=<hex>): the image must have fs-verity and its measured digest must equal <hex>.
# The image is opened ONCE (fd 3); the digest is measured on that fd and the EROFS mount uses the same fd
# (/proc/self/fd/3), so no path can be swapped between the check and the mount.
# First boot after an install on a machine without fs-verity (composefs/.verity-pending): verity is
# enabled on every object (and so on the image, which is an object), each object's measured digest must
# equal its name, then the marker is removed. Enabling verity is not a trust decision: the cmdline pins
# the image, the image pins every object's digest, and overlayfs verity=require compares them on open.
# Any error prints "bootcfs-setup-root: FATAL: <why>" and exits non-zero: the unit fails and the boot
# stops (the unit's FailureAction). There is no fallback to an unverified root.
set -u
LIB=${BOOTCFS_LIB:-/usr/lib/bootcfs/bootcfs-lib.sh}
. "$LIB"

SYSROOT=/sysroot
RUN=/run/bootcfs

now() { read -r _up _idle < /proc/uptime; printf '%s' "$_up"; }
say() { printf 'bootcfs-setup-root: %s\n' "$*"; }
die() { printf 'bootcfs-setup-root: FATAL: %s\n' "$*"; printf '<2>bootcfs-setup-root: FATAL: %s\n' "$*" > /dev/kmsg 2>/dev/null; exit 1; }

t0=$(now)
cmdline=$(cat /proc/cmdline) || die 'cannot read /proc/cmdline'
bootcfs_parse_cmdline "$cmdline" || die "$BOOTCFS_ERROR"
D=$BOOTCFS_DIGEST
ALG=$(bootcfs_verity_algorithm "$D")
if [ "$BOOTCFS_INSECURE" = y ]; then mode='insecure (composefs=?, fs-verity not required)'; else mode="sealed ($ALG fs-verity required)"; fi
say "start at ${t0}s: composefs=$D, $mode"

mountpoint -q "$SYSROOT" || die "the physical root is not mounted at $SYSROOT (no root partition found?)"
REPO=$SYSROOT/composefs
IMG=$REPO/images/$D
OBJS=$REPO/objects
STATE=$SYSROOT/state/deploy/$D
[ -d "$REPO" ] || die "no composefs repository at $REPO"
[ -d "$OBJS" ] || die "no object store at $OBJS"
[ -e "$IMG" ] || die "image $D is not in $REPO/images"
[ -d "$STATE/etc" ] || die "deployment state $STATE/etc is missing"
[ -d "$STATE/var" ] || die "deployment state $STATE/var is missing"

if [ -e "$REPO/.verity-pending" ] && [ "$BOOTCFS_INSECURE" = n ]; then
  # First boot after an install that could not enable fs-verity. Needs a writable physical root.
  a=$(now)
  mount -o remount,rw "$SYSROOT" || die 'cannot remount the physical root read-write to enable fs-verity'
  n=0
  for f in $(find "$OBJS" -type f); do
    rel=${f#"$OBJS"/}
    name=$(bootcfs_object_digest_from_path "$rel")
    case $name in *[!0-9a-f]*) continue ;; esac
    [ ${#name} = ${#D} ] || continue
    # "already has verity" is fine (an interrupted earlier first boot); the measurement below decides.
    fsverity enable --hash-alg="$ALG" "$f" >/dev/null 2>&1 || true
    n=$((n + 1))
  done
  # the image is an object (images/<d> -> ../objects/..) in bootcfs and composefs-rs repositories; if it is
  # a file of its own, enable it too (its digest is checked against the command line below)
  fsverity enable --hash-alg="$ALG" "$IMG" >/dev/null 2>&1 || true
  bad=$(find "$OBJS" -type f -print0 | xargs -0 -r fsverity measure 2>&1 | while read -r m p; do
    rel=${p#"$OBJS"/}
    name=$(bootcfs_object_digest_from_path "$rel")
    case $name in *[!0-9a-f]*) continue ;; esac
    [ ${#name} = ${#D} ] || continue
    [ "$m" = "$ALG:$name" ] || { printf '%s (measured %s)\n' "$rel" "$m"; break; }
  done)
  [ -z "$bad" ] || die "object $bad does not match its name (tampered before fs-verity was enabled)"
  rm -f "$REPO/.verity-pending" && sync || die 'cannot remove composefs/.verity-pending'
  say "first boot: fs-verity enabled on $n objects and checked (${a}s -> $(now)s)"
fi

( exec 3< "$IMG" ) 2>/dev/null || die "cannot open image $IMG"
exec 3< "$IMG"
if [ "$BOOTCFS_INSECURE" = n ]; then
  out=$(fsverity measure /proc/self/fd/3 2>&1) || die "image $D has no fs-verity: $out"
  m=$(bootcfs_parse_measure "$out") || die "cannot parse fsverity output: $out"
  [ "$m" = "$ALG $D" ] || die "image fs-verity digest ${m% *}:${m#* } does not equal composefs=$D (wrong or replaced image)"
fi

mkdir -p "$RUN/erofs" "$RUN/root" || die "cannot create $RUN"
mount -t erofs -o ro /proc/self/fd/3 "$RUN/erofs" || die "cannot mount image $D (erofs; damaged image?)"
exec 3<&-
opts="ro,lowerdir=$RUN/erofs::$OBJS,metacopy=on,redirect_dir=on"
[ "$BOOTCFS_INSECURE" = y ] || opts="$opts,verity=require"
mount -t overlay -o "$opts" "composefs:$D" "$RUN/root" || die "cannot mount the composefs overlay ($opts)"
umount -l "$RUN/erofs" || die "cannot detach the erofs mount"

# moving mounts needs private parents (systemd makes / shared); systemd makes it shared again after switch-root
mount --make-rprivate / || die 'cannot make / private'
mount --bind "$STATE/etc" "$RUN/root/etc" || die 'cannot bind-mount /etc'
mount --bind "$STATE/var" "$RUN/root/var" || die 'cannot bind-mount /var'
[ -d "$RUN/root/sysroot" ] || die 'the image has no /sysroot directory'
mount --move "$SYSROOT" "$RUN/root/sysroot" || die 'cannot move the physical root under the new root'
mount -o remount,bind,ro "$RUN/root/sysroot" || die 'cannot make /sysroot read-only'
mount --move "$RUN/root" "$SYSROOT" || die "cannot move the new root to $SYSROOT"
say "done at $(now)s: / = composefs:$D (setup took ${t0}s -> $(now)s)"
exit 0
