#!/usr/bin/env bash
# Fetches the browser libraries of the chat widget and the agent console from the npm registry at pinned
# versions (npm pack, integrity checked against the lock list below) and copies their dist files and licences
# into web_service/static/vendor/. The vendored files are committed: pages load nothing from a CDN, and a
# fresh clone works offline. `scripts/vendor.sh --check` verifies that the committed files match the pins.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/web_service/static/vendor"
# name version file-in-package -> vendored name
PINS=(
  "socket.io-client 4.8.1 dist/socket.io.min.js socket.io.min.js"
  "dompurify 3.2.6 dist/purify.min.js purify.min.js"
  "marked 15.0.12 lib/marked.umd.js marked.umd.js"
  "uplot 1.6.32 dist/uPlot.iife.min.js uPlot.iife.min.js"
  "uplot 1.6.32 dist/uPlot.min.css uPlot.min.css"
  "axe-core 4.10.3 axe.min.js axe.min.js"
)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mode="${1:-}"
mkdir -p "$DEST"
for pin in "${PINS[@]}"; do
  read -r name version file target <<<"$pin"
  dir="$work/$name-$version"
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "$name@$version" >/dev/null && tar -xzf ./*.tgz)
  fi
  src="$dir/package/$file"
  if [ "$mode" = "--check" ]; then
    cmp -s "$src" "$DEST/$target" || { echo "vendor: $target differs from $name@$version" >&2; exit 1; }
  else
    cp "$src" "$DEST/$target"
    for lic in LICENSE LICENSE.md LICENSE.txt; do
      [ -f "$dir/package/$lic" ] && cp "$dir/package/$lic" "$DEST/LICENSE.$name" && break
    done
  fi
done
if [ "$mode" = "--check" ]; then echo "vendor: all files match their pins"; else
  (cd "$DEST" && sha256sum ./*.js ./*.css > SHA256SUMS); echo "vendor: files in $DEST"; fi
