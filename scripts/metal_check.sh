#!/usr/bin/env bash
# End-to-end check of the Metal runtime, for a Mac with a Metal GPU (Apple
# silicon, or an Intel Mac's AMD/Intel GPU). The runtime was written,
# compiled and type-checked on Linux, never run: this is what must pass
# first (README, "Metal"). Exits non-zero at the first failure.
#
#   scripts/metal_check.sh            # everything below
#   KEEP_VENV=1 scripts/metal_check.sh  # reuse .venv-metal
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -s)" != Darwin ]; then
  echo "metal_check: run this on macOS (Metal exists nowhere else)" >&2
  exit 2
fi
step() { printf '\n==== %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  [ -f "$HOME/.cargo/env" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
command -v rustup >/dev/null 2>&1 && rustup component add clippy >/dev/null 2>&1 || true

step "1. the pure-logic unit tests and the whole core crate's tests, on this Mac"
cargo test -p nexus --lib metal
cargo test -p nexus --lib

step "2. lints of the Metal build (native now, not cross)"
cargo clippy -p nexus --no-default-features --features metal --all-targets -- -D warnings
cargo clippy -p nexus --all-targets -- -D warnings

step "3. build and install the wheel (maturin, through pip) in .venv-metal"
if [ -z "${KEEP_VENV:-}" ] || [ ! -d .venv-metal ]; then
  rm -rf .venv-metal
  python3 -m venv .venv-metal
fi
# shellcheck disable=SC1091
. .venv-metal/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q '.[test]'

step "4. the Metal runtime lists this Mac's GPU(s)"
python - <<'PY'
import nexus
rt = nexus.get_runtime("metal")
devices = rt.get_devices()
assert devices, "the metal runtime has no device: MTLCopyAllDevices found none or listing failed"
for i, d in enumerate(devices):
    info = d.get_info()
    print(f"metal:{i}", info.get_str("Name"), "arch", info.get_str("Architecture"),
          "families", info.get_str_vec("GPUFamilies"))
assert nexus.get_runtimes()[0].get_name() == "metal", "Metal's GPU should be listed first"
PY

step "5. the self-check (python -m nexus: builtin add_vectors on every device)"
python -m nexus

step "6. the Metal-specific tests"
python -m pytest tests/test_metal.py -v

step "7. the whole suite over the Metal device(s) (test ids metal0, metal1, ...)"
python -m pytest tests -k metal -q

echo
echo "metal_check: all passed"
