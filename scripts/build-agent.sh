#!/usr/bin/env bash
# Build the guest agent as a small static binary: bash scripts/build-agent.sh <outdir>
# Produces <outdir>/banger-agent. Uses musl-gcc when installed (apt: musl-tools),
# else gcc with glibc's static libc. Override with CC=...; AGENT_WERROR=1 makes
# warnings fatal (CI).
set -euo pipefail

out=${1:-}
if [ -z "$out" ]; then
  echo "usage: bash scripts/build-agent.sh <outdir>" >&2
  exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src="$here/../src/guest/agent"

cc=${CC:-}
if [ -z "$cc" ]; then
  if command -v musl-gcc >/dev/null 2>&1; then
    cc=musl-gcc
  elif command -v gcc >/dev/null 2>&1; then
    cc=gcc
  else
    echo "build-agent: no C compiler: install musl-tools (preferred) or gcc" >&2
    exit 1
  fi
fi

version=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$here/../package.json" | head -n 1)
version=${version:-0.0.0-dev}

flags=(-std=c11 -D_GNU_SOURCE -Wall -Wextra -Os -static -s
  -ffunction-sections -fdata-sections -Wl,--gc-sections
  "-DBANGER_AGENT_VERSION=\"$version\"")
if [ "${AGENT_WERROR:-0}" = 1 ]; then flags+=(-Werror); fi

mkdir -p "$out"
tmp="$out/.banger-agent.tmp.$$"
trap 'rm -f "$tmp"' EXIT
"$cc" "${flags[@]}" -o "$tmp" "$src/agent.c" "$src/json.c" "$src/sysinfo.c" "$src/identity.c" "$src/growfs.c"
chmod 0755 "$tmp"
mv -f "$tmp" "$out/banger-agent"
trap - EXIT
echo "built $out/banger-agent ($(wc -c <"$out/banger-agent") bytes, $cc, version $version)"
