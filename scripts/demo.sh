#!/bin/bash
# The main job on a built-in default: build a composefs image (+ object store) from a sample tree and print
# its fs-verity digest — the value a sealed UKI carries as composefs=<digest>.
# Usage: scripts/demo.sh [SOURCE_DIR]   (default: a small sample OS-like tree made here, reproducibly)
set -euo pipefail
cd "$(dirname "$0")/.."
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
  # a "binary" large enough to live in the object store (> 64 bytes), reproducible content
  for i in $(seq 1 2000); do printf 'line %05d of a reproducible sample binary\n' "$i"; done > "$src/usr/bin/sample"
  chmod 755 "$src/usr/bin/sample"
  find "$src" -exec touch -h -d '2026-01-01 00:00:00 UTC' {} +
fi
rm -rf "$out/objects" "$out/image.cfs"
echo "source tree:   $src"
digest=$(./bin/bootcfs mkcomposefs --digest-store="$out/objects" --print-digest "$src" "$out/image.cfs")
echo "image:         $out/image.cfs ($(stat -c %s "$out/image.cfs") bytes)"
echo "object store:  $out/objects ($(find "$out/objects" -type f | wc -l) objects)"
echo "contents:"
./bin/bootcfs composefs-info ls "$out/image.cfs" | sed 's/^/  /'
ref=${BOOTCFS_REF:-/opt/bootcfs-ref}/composefs/bin/mkcomposefs
if [ -x "$ref" ]; then
  if [ "$("$ref" --print-digest-only "$src")" = "$digest" ]; then echo "reference check: mkcomposefs 1.0.8 computes the same digest";
  else echo "reference check: MISMATCH with mkcomposefs 1.0.8" >&2; exit 1; fi
fi
echo "fs-verity digest (sha256) of the image — the kernel argument would be composefs=$digest"
echo "$digest"
