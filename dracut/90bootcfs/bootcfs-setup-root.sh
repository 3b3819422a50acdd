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
# enabled on every object (and so on the image, which is an object) and on composefs/meta.json, each
# object's measured digest must equal its name, then the marker is removed. One perl process does it
# (bootcfs-verity-enable: one open + two ioctls per object, no fork per object). Enabling verity is not a
# trust decision: the cmdline pins the image, the image pins every object's digest, and overlayfs
# verity=require compares them on open; an object altered before this first boot does not match its name
# and is refused here.
# Any error prints "bootcfs-setup-root: FATAL: <why>" and exits non-zero: the unit fails and the boot
# stops (the unit's FailureAction). There is no fallback to an unverified root.
set -u
LIB=${BOOTCFS_LIB:-/usr/lib/bootcfs/bootcfs-lib.sh}
. "$LIB"

SYSROOT=/sysroot
RUN=/run/bootcfs
VERITY_ENABLE=${BOOTCFS_VERITY_ENABLE:-/usr/lib/bootcfs/bootcfs-verity-enable}

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
  mkdir -p "$RUN" || die "cannot create $RUN"
  # the list first (not a pipe): a find that fails part-way must stop the boot, not leave objects without verity
  find "$OBJS" -type f -print0 > "$RUN/objects.list" || die "cannot list the objects in $OBJS"
  # meta.json: a repository is secure when its meta.json has fs-verity. The image is an object in bootcfs and
  # composefs-rs repositories (images/<d> -> ../objects/..); if it is a file of its own, it is enabled too
  # (its digest is checked against the command line below).
  set -- --hash-alg="$ALG" --objects="$OBJS"
  [ -e "$REPO/meta.json" ] && set -- "$@" --enable-only="$REPO/meta.json"
  set -- "$@" --enable-only="$IMG"
  # one process for all objects: enable (already enabled is fine), measure, compare with the name
  # (LC_ALL=C: perl warns on stderr about a LANG whose locale is not in the initramfs)
  b=$(now)
  if ! out=$(LC_ALL=C "$VERITY_ENABLE" "$@" < "$RUN/objects.list" 2> "$RUN/verity.err"); then
    err=$(cat "$RUN/verity.err")
    die "first-boot fs-verity: ${err##*bootcfs-verity-enable: }"
  fi
  c=$(now)
  [ -s "$RUN/verity.err" ] && say "$(cat "$RUN/verity.err")"
  rm -f "$RUN/objects.list" "$RUN/verity.err"
  n=${out%% *}
  case $n in ''|*[!0-9]*) die "unexpected output from $VERITY_ENABLE: $out" ;; esac
  sync && rm -f "$REPO/.verity-pending" && sync || die 'cannot remove composefs/.verity-pending'
  say "first boot: fs-verity enabled on $n objects and checked (${a}s -> $(now)s): $out; one process: ${b}s -> ${c}s"
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

# The root is an overlay, not a block device: tell systemd which disk the system booted from, so that
# systemd-gpt-auto-generator (after switch-root) finds it and mounts the ESP at /boot (bootcfs status, upgrade,
# rollback and finalize read and write the boot entries there).
# (the generator wants the link to name /dev/block/MAJOR:MINOR)
physdev=$(findmnt -n -o MAJ:MIN "$SYSROOT" 2>/dev/null | tail -1 | tr -d ' ')
case $physdev in
  [0-9]*:[0-9]*) mkdir -p /run/systemd && ln -sfn "/dev/block/$physdev" /run/systemd/volatile-root || die 'cannot create /run/systemd/volatile-root' ;;
esac

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
