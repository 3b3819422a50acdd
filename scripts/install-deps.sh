#!/bin/bash
# install-deps.sh — installs everything bootcfs's tests and benchmarks need on Debian 12 (bookworm) amd64.
# Idempotent: every step checks whether it is already done. Run as root.
#
#   1. apt sources: trixie and sid (binary, pinned low so bookworm always wins) plus deb-src for sid
#   2. Debian packages: fsverity-utils, e2fsprogs, QEMU, busybox-static, cpio, kmod, ... (bookworm)
#   3. composefs 1.0.8 (mkcomposefs, composefs-info) built from Debian's sid source package into
#      $BOOTCFS_REF (default /opt/bootcfs-ref); sid's binary needs a newer libc than bookworm has
#   4. the Debian trixie kernel (6.12, CONFIG_FS_VERITY=y) unpacked into $BOOTCFS_CACHE/kernel for the vm
#      test tier (this host's kernel has no fs-verity; bookworm's 6.1 cannot mount composefs)
#   5. npm dependencies (npm ci) and the TypeScript build
#
# Env: BOOTCFS_REF (default /opt/bootcfs-ref), BOOTCFS_CACHE (default /var/cache/bootcfs),
#      SKIP_NPM=1 to skip step 5.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
REF=${BOOTCFS_REF:-/opt/bootcfs-ref}
CACHE=${BOOTCFS_CACHE:-/var/cache/bootcfs}
HERE=$(cd "$(dirname "$0")/.." && pwd)
T0=$(date +%s)
say() { echo "[install-deps +$(( $(date +%s) - T0 ))s] $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "install-deps.sh: run as root (it installs Debian packages)" >&2; exit 1; }
[ "$(dpkg --print-architecture)" = amd64 ] || { echo "install-deps.sh: amd64 only" >&2; exit 1; }

APT=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false)
have_pkgs() { local p; for p in "$@"; do dpkg-query -W -f='${Status}' "${p%%/*}" 2>/dev/null | grep -q 'install ok installed' || return 1; done; }

# ---------------------------------------------------------------- 1. apt sources
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$MIRROR" ] || MIRROR=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$MIRROR" ] || { echo "install-deps.sh: no Debian mirror configured in /etc/apt" >&2; exit 1; }
changed=0
if [ ! -e /etc/apt/preferences.d/bootcfs ]; then
  printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n\nPackage: *\nPin: release n=sid\nPin-Priority: 50\n' \
    > /etc/apt/preferences.d/bootcfs
  changed=1
fi
if ! grep -rqsE '^[^#]*Suites:.*\btrixie\b' /etc/apt/sources.list.d/ --exclude=bootcfs-src.sources && \
   ! grep -rqsE '^deb .* trixie( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' "$MIRROR" "$KEYRING" \
    > /etc/apt/sources.list.d/bootcfs-trixie.sources
  changed=1
fi
if [ ! -e /etc/apt/sources.list.d/bootcfs-src.sources ]; then
  printf 'Types: deb-src\nURIs: %s\nSuites: sid\nComponents: main\nSigned-By: %s\n' "$MIRROR" "$KEYRING" \
    > /etc/apt/sources.list.d/bootcfs-src.sources
  changed=1
fi
STAMP=/var/lib/apt/periodic/bootcfs-update-stamp
if [ "$changed" = 1 ] || [ ! -e "$STAMP" ] || [ -n "$(find "$STAMP" -mmin +1440 2>/dev/null)" ]; then
  say "apt-get update"
  "${APT[@]}" update -qq
  mkdir -p "$(dirname "$STAMP")"; touch "$STAMP"
fi

# ---------------------------------------------------------------- 2. Debian packages
PKGS=(fsverity e2fsprogs skopeo umoci docker-registry apache2-utils openssl qemu-system-x86 qemu-utils busybox-static cpio kmod xz-utils zstd attr util-linux
      build-essential meson ninja-build pkgconf libssl-dev go-md2man debootstrap time ca-certificates)
if ! have_pkgs "${PKGS[@]}"; then
  say "installing Debian packages"
  "${APT[@]}" install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
fi

# ---------------------------------------------------------------- 2b. boot and signing tools (issue 4/5 tests)
# bookworm: FAT and GPT tools, sbsigntool, osslsigncode; trixie (architecture-independent or libc-neutral):
# systemd-boot-efi 257 (stub + boot loader), OVMF 2025.02 with Secure Boot, python3-virt-firmware, python3-pefile.
BOOT_PKGS=(dosfstools mtools gdisk fdisk sbsigntool osslsigncode efitools mmdebstrap python3 python3-cryptography python3-zstandard python3-yaml uuid-runtime bc)
TRIXIE_PKGS=(systemd-boot-efi/trixie ovmf/trixie python3-virt-firmware/trixie python3-pefile/trixie)
missing=(); for p in "${BOOT_PKGS[@]}"; do have_pkgs "$p" || missing+=("$p"); done
mtrixie=(); for p in "${TRIXIE_PKGS[@]}"; do have_pkgs "$p" || mtrixie+=("$p"); done
# Only missing packages are named (an osslsigncode from bookworm-backports would otherwise be "upgraded" to
# trixie's, which needs trixie's libc); trixie packages in a call of their own for the same reason.
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  "${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ${#mtrixie[@]} -gt 0 ]; then
  say "installing ${mtrixie[*]}"
  "${APT[@]}" install -y -qq --no-install-recommends "${mtrixie[@]}" >/dev/null
fi
# ukify from trixie's systemd-ukify (the .deb conflicts with bookworm's systemd, so it is extracted, not installed)
UKV=$(apt-cache show systemd-ukify/trixie 2>/dev/null | awk '/^Version:/{print $2; exit}')
[ -n "$UKV" ] || { echo "install-deps.sh: systemd-ukify/trixie not found" >&2; exit 1; }
if [ "$(cat "$REF/ukify/.version" 2>/dev/null)" != "$UKV" ] || ! [ -x "$REF/bin/ukify" ]; then
  say "extracting systemd-ukify $UKV into $REF/ukify"
  t=$(mktemp -d /var/tmp/bootcfs-ukify.XXXXXX); chmod 755 "$t"
  (cd "$t" && "${APT[@]}" download -q "systemd-ukify=$UKV" >/dev/null 2>&1)
  rm -rf "$REF/ukify"; mkdir -p "$REF/ukify" "$REF/bin"
  dpkg-deb -x "$t"/systemd-ukify_*.deb "$REF/ukify"; rm -rf "$t"
  printf '#!/bin/sh\n# ukify from Debian trixie, run with the system python3\nexec /usr/bin/python3 %s/ukify/usr/bin/ukify "$@"\n' "$REF" \
    > "$REF/bin/ukify"
  chmod 755 "$REF/bin/ukify"
  echo "$UKV" > "$REF/ukify/.version"
fi

# ---------------------------------------------------------------- 3. composefs 1.0.8 from the sid source package
CFS_VER=$(apt-cache showsrc composefs 2>/dev/null | awk '/^Version:/{print $2}' | sort -V | tail -1)
[ -n "$CFS_VER" ] || { echo "install-deps.sh: composefs source package not found (deb-src sid)" >&2; exit 1; }
# (mkcomposefs exits 1 on --help, so check that it runs by its output, outside a pipeline: pipefail is on)
cfs_help=$("$REF/composefs/bin/mkcomposefs" --help 2>&1 || true)
if [ "$(cat "$REF/composefs/.version" 2>/dev/null)" != "$CFS_VER" ] || [[ "$cfs_help" != *--digest-store* ]] || \
   ! [ -x "$REF/composefs/bin/composefs-info" ]; then
  say "building composefs $CFS_VER from source into $REF/composefs"
  b=$(mktemp -d /var/tmp/bootcfs-composefs.XXXXXX); chmod 755 "$b"
  (cd "$b" && "${APT[@]}" source -q "composefs=$CFS_VER" >/dev/null 2>&1)
  d=$(ls -d "$b"/composefs-*/ | head -1)
  libdir="lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)"
  (cd "$d" && LDFLAGS="-Wl,-rpath,$REF/composefs/$libdir" meson setup build --prefix="$REF/composefs" \
      --libdir="$libdir" --buildtype=release -Dfuse=disabled -Dman=disabled >"$b/setup.log" 2>&1 \
    && ninja -C build >"$b/build.log" 2>&1 && rm -rf "$REF/composefs" && ninja -C build install >"$b/install.log" 2>&1) \
    || { tail -40 "$b"/*.log >&2; exit 1; }
  echo "$CFS_VER" > "$REF/composefs/.version"
  rm -rf "$b"
fi

# ---------------------------------------------------------------- 4. trixie kernel for the vm tier
KDIR="$CACHE/kernel"
if [ ! -e "$KDIR/.done" ]; then
  say "downloading Debian trixie's kernel into $KDIR"
  KPKG=$(apt-cache depends linux-image-amd64/trixie 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$KPKG" ] || { echo "install-deps.sh: trixie kernel package not found" >&2; exit 1; }
  rm -rf "$KDIR"; mkdir -p "$KDIR/deb"; chmod 755 "$KDIR" "$KDIR/deb"
  (cd "$KDIR/deb" && "${APT[@]}" download -q "$KPKG" >/dev/null 2>&1)
  dpkg-deb -x "$KDIR"/deb/*.deb "$KDIR/root"
  [ -e "$KDIR/root/lib" ] || ln -s usr/lib "$KDIR/root/lib"
  kver=$(ls "$KDIR/root/lib/modules" | head -1)
  depmod -b "$KDIR/root" "$kver"
  rm -rf "$KDIR/deb"
  echo "$kver" > "$KDIR/.done"
fi

# ---------------------------------------------------------------- 5. npm
if [ "${SKIP_NPM:-0}" != 1 ]; then
  cd "$HERE"
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    say "npm ci"; bash scripts/npm-ci.sh
  fi
  say "npm run build"; npm run -s build
fi
say "done (composefs $(cat "$REF/composefs/.version"), kernel $(cat "$KDIR/.done"))"
