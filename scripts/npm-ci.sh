#!/bin/bash
# npm ci for this checkout. zstd-napi is a native addon built by node-gyp, which by default downloads Node's
# headers from nodejs.org; where the installed Node ships its headers (<prefix>/include/node, as Debian's and
# NodeSource's packages do), point node-gyp at them so that only the npm registry is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${npm_config_nodedir:-}" ]; then
  prefix=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
  if [ -f "$prefix/include/node/node.h" ]; then export npm_config_nodedir=$prefix; fi
fi
exec npm ci --no-audit --no-fund --loglevel=error "$@"
