#!/usr/bin/env bash
# Installs what building, running and testing Pulse needs, skipping what is already there.
#
#   scripts/setup.sh          tools to build and run the app
#   scripts/setup.sh --test   also what the tests need (Debian's chromium, redis, Playwright)
#
# Works on a fresh Debian 12 machine with rustup and Node.js 20 or newer (with npm), reaching
# only the package registries (crates.io, npm, Debian): nothing is downloaded from elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=false
case "${1:-}" in
  "") ;;
  --test) want_test=true ;;
  *) echo "usage: scripts/setup.sh [--test]" >&2; exit 2 ;;
esac

CARGO_LEPTOS_VERSION=0.3.10   # 0.3.11 does not build with Rust 1.95
BINARYEN_VERSION=132          # Debian's binaryen (108) breaks hydration without a build error

step() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif have sudo; then sudo "$@"
  else fail "'$*' needs root, and sudo is not installed"
  fi
}

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

have rustup || fail "rustup is missing: install Rust with rustup first (https://rustup.rs)"
have npm || fail "Node.js and npm are missing: install Node.js 20 or newer"
node_major=$(node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/')
if $want_test && [[ ${node_major:-0} -lt 20 ]]; then
  fail "Playwright needs Node.js 20 or newer; this machine has $(node --version 2>/dev/null || echo none)"
fi
if dpkg -s binaryen >/dev/null 2>&1; then
  fail "Debian's binaryen package is installed: its wasm-opt breaks hydration without a build error. Remove it (apt-get remove binaryen); this script installs npm's."
fi

apt_packages=()
# Linking any Rust program needs a C toolchain; cargo-leptos also builds OpenSSL (make, perl).
{ ! have cc || ! have make; } && apt_packages+=(build-essential)
! have perl && apt_packages+=(perl)
$want_test && [[ ! -x /usr/bin/chromium ]] && apt_packages+=(chromium)
$want_test && ! have openssl && apt_packages+=(openssl)
$want_test && ! have redis-server && apt_packages+=(redis-server)
$want_test && [[ ! -x /usr/sbin/nginx ]] && apt_packages+=(nginx)
if ((${#apt_packages[@]})); then
  step "Installing Debian packages: ${apt_packages[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
fi

installed_targets=$(rustup target list --installed)
if ! grep -qx wasm32-unknown-unknown <<<"$installed_targets"; then
  step "Adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
if $want_test; then
  installed_components=$(rustup component list --installed)
  for component in rustfmt clippy; do
    if ! grep -q "^${component}" <<<"$installed_components"; then
      step "Adding the ${component} component"
      rustup component add "$component"
    fi
  done
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
  # Not --locked: its lockfile pins a crate version the registry mirror lacks. Dependencies
  # are then resolved afresh, so prefer versions this Rust can build.
  CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo install wasm-bindgen-cli --version "${wasm_bindgen_version}"
fi

if ! wasm-opt --version 2>/dev/null | grep -q "version ${BINARYEN_VERSION}"; then
  step "Installing wasm-opt (npm binaryen@${BINARYEN_VERSION})"
  as_root npm install --global --no-fund --no-audit "binaryen@${BINARYEN_VERSION}"
fi

if $want_test; then
  # Reinstalled whenever the lockfile changes (by content: dates lie after a checkout).
  lock_sum=$(sha256sum end2end/package-lock.json | cut -d' ' -f1)
  stamp=end2end/node_modules/.pulse-lock-sha256
  if [[ ! -d end2end/node_modules/@playwright/test ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]]; then
    step "Installing the end-to-end test packages (npm ci)"
    (cd end2end && npm ci --no-fund --no-audit)
    echo "$lock_sum" >"$stamp"
  fi
fi

# Each tool must now be there at the right version: cargo-leptos would otherwise try to
# download one from the web at build time, and fail here without saying why.
cargo leptos --version 2>/dev/null | grep -q " ${CARGO_LEPTOS_VERSION}\$" ||
  fail "cargo-leptos ${CARGO_LEPTOS_VERSION} is not on PATH after installing it"
wasm-bindgen --version 2>/dev/null | grep -q " ${wasm_bindgen_version}\$" ||
  fail "wasm-bindgen ${wasm_bindgen_version} is not on PATH after installing it"
wasm-opt --version 2>/dev/null | grep -q "version ${BINARYEN_VERSION}" ||
  fail "wasm-opt ${BINARYEN_VERSION} is not first on PATH after installing it (found: $(command -v wasm-opt || echo none))"

step "Tools ready"
