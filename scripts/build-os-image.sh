#!/bin/bash
# build-os-image.sh — builds bootcfs's demo/test OS image from Debian packages: an OCI image layout with the
# tags v1 and v2, cached under $BOOTCFS_CACHE/os-image (default /var/cache/bootcfs/os-image) and rebuilt only
# when its inputs change. Prints the layout directory on stdout (progress, timings and sizes on stderr).
#
#   scripts/build-os-image.sh            build (or reuse) and print e.g. /var/cache/bootcfs/os-image/layout-<key>
#   scripts/build-os-image.sh --key      print the cache key of the current inputs and exit
#
# The image (Debian trixie, kernel 6.12: composefs needs >= 6.6) has three layers, each cached by its inputs:
#   1. base  (key: suite, package list, mmdebstrap options, this script, dracut/90bootcfs): mmdebstrap's tree,
#      plus bootcfs's dracut module, a systemd initramfs built by dracut at /usr/lib/modules/<kver>/initramfs.img,
#      the kernel at /usr/lib/modules/<kver>/vmlinuz (bootc layout; Debian's /boot is emptied), an empty
#      /sysroot, kargs.d (console=ttyS0 panic=-1 rd.shell=0 rw), demo files (/etc/bootcfs-demo.conf release=1).
#   2. app   (key: dist/src, package.json, production node_modules, dracut/, os-image/): bootcfs at
#      /usr/lib/bootcfs, /usr/bin/bootcfs (runs it with Debian's node), the boot report service (os-image/:
#      prints BOOTCFS-REPORT lines on the console at multi-user) and /usr/share/bootcfs-demo/canary.txt (a
#      4.5 KiB file stored as an object: tests alter it to see fs-verity refuse it).
#   3. v2 only: /usr/share/bootcfs-demo/v2 (new file) and /etc/bootcfs-demo.conf release=2 (changed /etc default).
# Layers are uncompressed pax tars (GNU tar --xattrs --numeric-owner --sort=name, mtimes clamped to a fixed
# epoch), so the same inputs give the same layer bytes; the mirror is taken from the host's apt sources.
# The mmdebstrap step runs with --mode=$BOOTCFS_MMDEBSTRAP_MODE (default: root as root, else unshare);
# the dracut step needs root (chroot + /proc), as CI has.
set -euo pipefail
export LC_ALL=C.UTF-8 TZ=UTC

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BOOTCFS_CACHE:-/var/cache/bootcfs}/os-image
EPOCH=1767225600   # 2026-01-01T00:00:00Z: every mtime in the image is clamped to this
SUITE=trixie
PACKAGES=(linux-image-amd64 systemd systemd-sysv udev dracut e2fsprogs fsverity kmod nodejs systemd-boot-efi)
MMDEBSTRAP_OPTS=(
  --variant=minbase
  --aptopt='Acquire::Check-Valid-Until "false"'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
)
KARGS='["console=ttyS0", "panic=-1", "rd.shell=0", "rw"]'
DRACUT_MODULE=$REPO_ROOT/dracut/90bootcfs
TAR_CREATE=(tar --create --format=pax --xattrs --xattrs-include='*' --numeric-owner --sort=name
  --mtime="@$EPOCH" --clamp-mtime --pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime')

log() { printf '[build-os-image] %s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }
sha() { sha256sum | cut -c1-64; }
mib() { printf '%s MiB' "$(( ($(stat -c %s "$1") + 1048575) / 1048576 ))"; }

# --- cache keys ------------------------------------------------------------------------------------------
tree_hash() { # sha256 over the names and contents of the files under the given paths (relative to REPO_ROOT)
  (cd "$REPO_ROOT" && find "$@" -type f -print0 | sort -z | xargs -0 -r sha256sum | sha)
}
key_base_packages() { printf 'A1|%s|%s|%s|%s\n' "$SUITE" "${PACKAGES[*]}" "${MMDEBSTRAP_OPTS[*]}" "$EPOCH" | sha; }
key_base() { { key_base_packages; sha256sum < "${BASH_SOURCE[0]}"; tree_hash dracut/90bootcfs; } | sha; }
prod_modules() { # top-level production node_modules (npm's view: transitive and optional dependencies included)
  (cd "$REPO_ROOT" && npm ls --omit=dev --all --parseable 2>/dev/null) | while read -r p; do
    rel=${p#"$REPO_ROOT"/}
    [[ $rel =~ ^node_modules/(@[^/]+/)?[^/@][^/]*$ ]] && printf '%s\n' "$rel"
  done | sort -u
}
key_app() {
  [ -f "$REPO_ROOT/dist/src/cli/main.js" ] || { log "bootcfs is not built: run 'npx tsc -p tsconfig.json' first"; exit 2; }
  { tree_hash dist/src package.json dracut os-image systemd; prod_modules | tr '\n' ' ' | sha; sha256sum < "${BASH_SOURCE[0]}"; } | sha
}

if [ "${1:-}" = --key ]; then { key_base; key_app; } | sha; exit 0; fi
[ $# -eq 0 ] || { echo "usage: $0 [--key]" >&2; exit 2; }

mkdir -p "$CACHE"
exec 9> "$CACHE/.lock"
flock 9   # one build at a time; a second caller waits and then reuses the result

KEY_A=$(key_base_packages); KEY_B=$(key_base); KEY_C=$(key_app)
KEY=$(printf '%s %s v2-1\n' "$KEY_B" "$KEY_C" | sha)
LAYOUT=$CACHE/layout-$KEY
if [ -f "$LAYOUT/.complete" ]; then
  log "cached: $LAYOUT"
  printf '%s\n' "$LAYOUT"
  exit 0
fi

WORK=$(mktemp -d "$CACHE/.work-XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
T_ALL=$(now)

# --- 1a. Debian packages (mmdebstrap) ---------------------------------------------------------------------
PKG_TAR=$CACHE/packages-$KEY_A.tar
if [ ! -f "$PKG_TAR" ]; then
  command -v mmdebstrap >/dev/null || { log 'mmdebstrap is missing: run scripts/install-deps.sh'; exit 2; }
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$MIRROR" ] || MIRROR=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$MIRROR" ] || { log 'no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list'; exit 2; }
  mode=${BOOTCFS_MMDEBSTRAP_MODE:-}
  [ -n "$mode" ] || { [ "$(id -u)" = 0 ] && mode=root || mode=unshare; }
  t=$(now)
  log "mmdebstrap --mode=$mode $SUITE (${PACKAGES[*]}) from $MIRROR"
  SOURCE_DATE_EPOCH=$EPOCH mmdebstrap --mode="$mode" "${MMDEBSTRAP_OPTS[@]}" --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    "$SUITE" "$WORK/packages.tar" "deb $MIRROR $SUITE main" > "$WORK/mmdebstrap.log" 2>&1 \
    || { tail -30 "$WORK/mmdebstrap.log" >&2; log 'mmdebstrap failed'; exit 1; }
  mv "$WORK/packages.tar" "$PKG_TAR"
  log "mmdebstrap: $(since "$t") s, $(mib "$PKG_TAR")"
fi

# --- 1b. base layer: dracut module, initramfs, bootc layout -----------------------------------------------
BASE_TAR=$CACHE/base-$KEY_B.tar
if [ ! -f "$BASE_TAR" ]; then
  [ "$(id -u)" = 0 ] || { log 'building the base layer needs root (chroot + dracut)'; exit 2; }
  t=$(now)
  R=$WORK/root
  mkdir -p "$R"
  tar --extract --xattrs --xattrs-include='*' --numeric-owner --same-permissions -f "$PKG_TAR" -C "$R"
  KVER=$(ls "$R/usr/lib/modules")
  [ "$(printf '%s\n' "$KVER" | wc -l)" = 1 ] || { log "expected one kernel, found: $KVER"; exit 1; }
  install -d -m 755 "$R/usr/lib/dracut/modules.d/90bootcfs"
  install -m 755 "$DRACUT_MODULE/module-setup.sh" "$DRACUT_MODULE/bootcfs-setup-root.sh" "$DRACUT_MODULE/bootcfs-verity-enable.pl" "$R/usr/lib/dracut/modules.d/90bootcfs/"
  install -m 644 "$DRACUT_MODULE/bootcfs-lib.sh" "$DRACUT_MODULE/bootcfs-setup-root.service" "$R/usr/lib/dracut/modules.d/90bootcfs/"
  install -d -m 755 "$R/etc/dracut.conf.d"
  cat > "$R/etc/dracut.conf.d/90-bootcfs.conf" <<'EOF'
# bootcfs: a generic (not host-specific) systemd initramfs with bootcfs's setup-root
hostonly="no"
reproducible="yes"
add_dracutmodules+=" bootcfs "
omit_dracutmodules+=" plymouth "
EOF
  # dracut runs in the tree (its own kernel modules and tools), with private /proc, /sys and /dev mounts
  unshare --mount --propagation private sh -ec '
    R=$1; KVER=$2
    mount -t proc proc "$R/proc"; mount -t sysfs sys "$R/sys"; mount --bind /dev "$R/dev"; mount -t tmpfs tmp "$R/tmp"
    chroot "$R" dracut --force --kver "$KVER" "/usr/lib/modules/$KVER/initramfs.img"
  ' sh "$R" "$KVER" > "$WORK/dracut.log" 2>&1 || { tail -30 "$WORK/dracut.log" >&2; log 'dracut failed'; exit 1; }
  t_dracut=$(since "$t")
  cp "$R/boot/vmlinuz-$KVER" "$R/usr/lib/modules/$KVER/vmlinuz"
  # the bootable transform empties /boot, /dev, /run, /tmp ...; do it here so nothing stale is in the layer
  find "$R/boot" "$R/dev" "$R/proc" "$R/sys" "$R/run" "$R/tmp" -mindepth 1 -delete
  rm -f "$R/etc/machine-id" && : > "$R/etc/machine-id"            # systemd's "first boot" marker, not an identity
  rm -rf "$R/var/cache/apt"/*.bin "$R/var/lib/apt/lists"/* "$R/var/log"/*.log "$R/var/log/apt"/*
  install -d -m 755 "$R/sysroot" "$R/usr/lib/bootc/kargs.d" "$R/usr/share/bootcfs-demo"
  printf '# kernel arguments of the bootcfs demo image (in the signed UKI command line)\nkargs = %s\n' "$KARGS" \
    > "$R/usr/lib/bootc/kargs.d/10-bootcfs-demo.toml"
  printf 'bootcfs-demo\n' > "$R/etc/hostname"
  printf '# bootcfs demo image: an /etc default that v2 changes\nrelease=1\n' > "$R/etc/bootcfs-demo.conf"
  printf 'bootcfs demo OS image (Debian %s, kernel %s)\n' "$SUITE" "$KVER" > "$R/usr/share/bootcfs-demo/README"
  chroot "$R" dpkg-query -W -f '${Package} ${Version}\n' > "$CACHE/base-$KEY_B.packages"
  ls "$R" | sort | (cd "$R" && xargs "${TAR_CREATE[@]}" -f "$WORK/base.tar")
  mv "$WORK/base.tar" "$BASE_TAR"
  log "base layer: $(since "$t") s (dracut $t_dracut s), $(mib "$BASE_TAR"), kernel $KVER," \
      "initramfs $(mib "$R/usr/lib/modules/$KVER/initramfs.img"), vmlinuz $(mib "$R/usr/lib/modules/$KVER/vmlinuz")"
  rm -rf "$R"
fi

# --- 2. app layer: bootcfs itself ---------------------------------------------------------------------------
APP_TAR=$CACHE/app-$KEY_C.tar
if [ ! -f "$APP_TAR" ]; then
  t=$(now)
  A=$WORK/app
  L=$A/usr/lib/bootcfs
  mkdir -p "$L/dist" "$A/usr/bin"
  cp -a "$REPO_ROOT/package.json" "$L/"
  cp -a "$REPO_ROOT/dist/src" "$L/dist/src"
  cp -a "$REPO_ROOT/dracut" "$L/dracut"
  prod_modules | while read -r m; do mkdir -p "$L/$(dirname "$m")"; cp -a "$REPO_ROOT/$m" "$L/$m"; done
  printf '#!/bin/sh\nexec /usr/bin/node /usr/lib/bootcfs/dist/src/cli/main.js "$@"\n' > "$A/usr/bin/bootcfs"
  chmod 755 "$A/usr/bin/bootcfs"
  install -D -m 755 "$REPO_ROOT/os-image/bootcfs-boot-report.sh" "$L/os-image/bootcfs-boot-report"
  U=$A/usr/lib/systemd/system
  install -D -m 644 "$REPO_ROOT/os-image/bootcfs-boot-report.service" "$U/bootcfs-boot-report.service"
  mkdir -p "$U/multi-user.target.wants" "$A/usr/share/bootcfs-demo"
  ln -s ../bootcfs-boot-report.service "$U/multi-user.target.wants/bootcfs-boot-report.service"
  for u in bootcfs-finalize-staged.service bootcfs-fetch-apply-updates.service bootcfs-fetch-apply-updates.timer; do
    install -m 644 "$REPO_ROOT/systemd/$u" "$U/$u"
  done
  ln -s ../bootcfs-finalize-staged.service "$U/multi-user.target.wants/bootcfs-finalize-staged.service"
  seq 1 200 | sed 's/^/bootcfs canary line /' > "$A/usr/share/bootcfs-demo/canary.txt"
  chown -R 0:0 "$A"; chmod -R u+rwX,go+rX,go-w "$A"
  (cd "$A" && "${TAR_CREATE[@]}" -f "$WORK/app.tar" usr/bin/bootcfs usr/lib/bootcfs usr/lib/systemd/system usr/share/bootcfs-demo/canary.txt)
  mv "$WORK/app.tar" "$APP_TAR"
  log "app layer: $(since "$t") s, $(mib "$APP_TAR")"
fi

# --- 3. v2 layer (a visible change for upgrade tests) --------------------------------------------------------
V=$WORK/v2
mkdir -p "$V/usr/share/bootcfs-demo" "$V/etc"
printf 'This file exists only in v2 of the bootcfs demo image.\n' > "$V/usr/share/bootcfs-demo/v2"
printf '# bootcfs demo image: an /etc default that v2 changes\nrelease=2\n' > "$V/etc/bootcfs-demo.conf"
chmod 644 "$V/usr/share/bootcfs-demo/v2" "$V/etc/bootcfs-demo.conf"
(cd "$V" && "${TAR_CREATE[@]}" --owner=0 --group=0 -f "$WORK/v2.tar" etc/bootcfs-demo.conf usr/share/bootcfs-demo/v2)

# --- 4. OCI image layout with tags v1 and v2 ------------------------------------------------------------------
OUT=$WORK/layout
mkdir -p "$OUT/blobs/sha256"
printf '{"imageLayoutVersion":"1.0.0"}' > "$OUT/oci-layout"
blob_file() { # FILE -> stores it as a blob (hard link if possible), prints "<hex> <size>"
  local h s; h=$(sha < "$1"); s=$(stat -c %s "$1")
  ln "$1" "$OUT/blobs/sha256/$h" 2>/dev/null || cp "$1" "$OUT/blobs/sha256/$h"
  printf '%s %s\n' "$h" "$s"
}
blob_text() { # TEXT -> stores it, prints "<hex> <size>"
  printf '%s' "$1" > "$WORK/blob.tmp"; local r; r=$(blob_file "$WORK/blob.tmp"); rm -f "$WORK/blob.tmp"; printf '%s\n' "$r"
}
read -r BASE_H BASE_S < <(blob_file "$BASE_TAR")
read -r APP_H APP_S < <(blob_file "$APP_TAR")
read -r V2_H V2_S < <(blob_file "$WORK/v2.tar")
LT=application/vnd.oci.image.layer.v1.tar
layer() { printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$LT" "$1" "$2"; }
manifest_for() { # VERSION DIFF_IDS_JSON LAYERS_JSON HISTORY_JSON -> prints the manifest's "<hex> <size>"
  local cfg ch cs
  cfg=$(printf '{"architecture":"amd64","os":"linux","created":"2026-01-01T00:00:00Z","config":{"Labels":{"containers.bootc":"1","org.opencontainers.image.title":"bootcfs-demo","org.opencontainers.image.version":"%s"}},"rootfs":{"type":"layers","diff_ids":[%s]},"history":[%s]}' "$1" "$2" "$4")
  read -r ch cs < <(blob_text "$cfg")
  blob_text "$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' "$ch" "$cs" "$3")"
}
H_BASE='{"created":"2026-01-01T00:00:00Z","created_by":"bootcfs build-os-image: Debian packages, dracut initramfs"}'
H_APP='{"created":"2026-01-01T00:00:00Z","created_by":"bootcfs build-os-image: bootcfs"}'
H_V2='{"created":"2026-01-01T00:00:00Z","created_by":"bootcfs build-os-image: v2 changes"}'
read -r M1_H M1_S < <(manifest_for 1 "\"sha256:$BASE_H\",\"sha256:$APP_H\"" "$(layer "$BASE_H" "$BASE_S"),$(layer "$APP_H" "$APP_S")" "$H_BASE,$H_APP")
read -r M2_H M2_S < <(manifest_for 2 "\"sha256:$BASE_H\",\"sha256:$APP_H\",\"sha256:$V2_H\"" \
  "$(layer "$BASE_H" "$BASE_S"),$(layer "$APP_H" "$APP_S"),$(layer "$V2_H" "$V2_S")" "$H_BASE,$H_APP,$H_V2")
entry() { printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}' "$1" "$2" "$3"; }
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s,%s]}' \
  "$(entry "$M1_H" "$M1_S" v1)" "$(entry "$M2_H" "$M2_S" v2)" > "$OUT/index.json"
printf '%s\n' "$KEY" > "$OUT/.complete"
sync -f "$OUT/index.json"
rm -rf "$LAYOUT"
mv "$OUT" "$LAYOUT"

# keep only what the current inputs use (layer tars are hard-linked into the layout, so space is shared)
for f in "$CACHE"/layout-* "$CACHE"/base-*.tar "$CACHE"/base-*.packages "$CACHE"/app-*.tar "$CACHE"/packages-*.tar; do
  case $f in "$LAYOUT"|"$BASE_TAR"|"$CACHE/base-$KEY_B.packages"|"$APP_TAR"|"$PKG_TAR") ;; *) [ -e "$f" ] && rm -rf "$f" ;; esac
done
log "layout: $(du -sh --apparent-size "$LAYOUT" | cut -f1) (base $((BASE_S >> 20)) MiB, app $((APP_S >> 20)) MiB, v2 $V2_S B), total $(since "$T_ALL") s"
printf '%s\n' "$LAYOUT"
