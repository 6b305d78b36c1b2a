#!/usr/bin/env bash
# Draws a nexus trace as SVG and renders it in headless Chromium (apt
# chromium) to a PNG, to check that the SVG displays in a real browser.
#   scripts/render_timeline_chromium.sh run.json [out.png]
set -euo pipefail
trace="${1:?usage: $0 run.json [out.png]}"
png="${2:-${trace%.json}.png}"
svg="${trace%.json}.svg"
python3 -m nexus trace "$trace" -o "$svg"
browser="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$browser" ] || { echo "chromium is not installed (apt install chromium)"; exit 2; }
"$browser" --headless --no-sandbox --disable-gpu --window-size=1200,400 \
  --screenshot="$png" "file://$(realpath "$svg")" >/dev/null 2>&1
test -s "$png" && echo "rendered $png"
