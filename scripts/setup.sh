#!/usr/bin/env bash
# Installs what building, running and testing Pulse needs, skipping what is already there.
#
#   scripts/setup.sh          tools to build and run the app
#   scripts/setup.sh --test   also what the tests need (Debian's chromium, redis, Playwright)
#
# Works on a fresh Debian 12 machine with rustup, Node.js and npm, reaching only the package
# registries (crates.io, npm, Debian): nothing is downloaded from elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=false
[[ "${1:-}" == "--test" ]] && want_test=true

CARGO_LEPTOS_VERSION=0.3.10   # 0.3.11 does not build with Rust 1.95
BINARYEN_VERSION=132          # Debian's binaryen (108) breaks hydration without a build error

step() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

export PATH="$HOME/.cargo/bin:$PATH"

apt_packages=()
$want_test && [[ ! -x /usr/bin/chromium ]] && apt_packages+=(chromium)
$want_test && ! have openssl && apt_packages+=(openssl)
$want_test && ! have redis-server && apt_packages+=(redis-server)
$want_test && ! have nginx && apt_packages+=(nginx)
if ((${#apt_packages[@]})); then
  step "Installing Debian packages: ${apt_packages[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "Adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

if ! cargo leptos --version 2>/dev/null | grep -q " ${CARGO_LEPTOS_VERSION}\$"; then
  step "Installing cargo-leptos ${CARGO_LEPTOS_VERSION} (about 12 minutes on 2 cores, once)"
  cargo install cargo-leptos --version "${CARGO_LEPTOS_VERSION}" --locked
fi

# The wasm-bindgen CLI must match the wasm-bindgen crate in Cargo.lock exactly.
[[ -f Cargo.lock ]] || cargo generate-lockfile
wasm_bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -q " ${wasm_bindgen_version}\$"; then
  step "Installing wasm-bindgen-cli ${wasm_bindgen_version}"
  # Not --locked: its lockfile pins a crate version the registry mirror lacks.
  cargo install wasm-bindgen-cli --version "${wasm_bindgen_version}"
fi

if ! wasm-opt --version 2>/dev/null | grep -q "version ${BINARYEN_VERSION}"; then
  step "Installing wasm-opt (npm binaryen@${BINARYEN_VERSION})"
  as_root npm install --global --no-fund --no-audit "binaryen@${BINARYEN_VERSION}"
fi

if $want_test; then
  if [[ ! -d end2end/node_modules/@playwright/test ]] || [[ end2end/package-lock.json -nt end2end/node_modules/.package-lock.json ]]; then
    step "Installing the end-to-end test packages (npm ci)"
    (cd end2end && npm ci --no-fund --no-audit)
  fi
fi

step "Tools ready"
