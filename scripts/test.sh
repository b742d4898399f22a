#!/usr/bin/env bash
# Sets up what is missing, then runs every check and test Pulse has:
# formatting, clippy (server and WASM builds apart), Rust unit and integration tests, and
# the Playwright tests in Debian's chromium against a debug build and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
# nginx (for the reverse-proxy test) lives in /usr/sbin, off a normal user's PATH.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH:/usr/sbin"
target_dir=${CARGO_TARGET_DIR:-target}

step() { printf '\n\033[1;34m==>\033[0m %s\n' "$*"; }

# On CI (CI is set; .ci/run sets it) the run keeps its disk use low: no incremental caches,
# and each build's outputs go as soon as no later step needs them.
lean=false
[[ -n "${CI:-}" ]] && lean=true
$lean && export CARGO_INCREMENTAL=0
free_disk() {
  local what=$1
  shift
  { $lean && (($#)); } || return 0
  step "Freeing disk: $what ($(du -shc "$@" 2>/dev/null | tail -1 | cut -f1))"
  rm -rf "$@"
}

step "Formatting"
cargo fmt --all -- --check

step "Layers: imports point one way (ARCHITECTURE.md)"
python3 scripts/layers.py

# Checked apart: a --workspace build would unify the app's `ssr` and `hydrate` features.
step "Clippy: server, load generator, benchmarks"
cargo clippy --locked -p server -p app -p loadgen -p bench -p attack --all-targets -- -D warnings
step "Clippy: WASM frontend"
cargo clippy --locked -p frontend --target wasm32-unknown-unknown -- -D warnings

step "Rust tests"
cargo test --locked -p app -p server -p loadgen -p bench -p attack
# The test executables (extensionless files in deps/) are not part of any later build.
free_disk "test executables" $(find "$target_dir/debug/deps" -maxdepth 1 -type f -perm -u+x ! -name '*.*')

for profile in debug release; do
  step "Build ($profile)"
  if [[ $profile == release ]]; then cargo leptos build --release; else cargo leptos build; fi
  step "Playwright against the $profile build"
  server_bin=$(realpath "$target_dir/$profile/server")
  [[ -x $server_bin ]] || { echo "no server binary at $server_bin" >&2; exit 1; }
  (cd end2end && PULSE_SERVER_BIN="$server_bin" PULSE_PROFILE=$profile npx playwright test)
  if [[ $profile == debug ]]; then
    free_disk "the debug builds" "$target_dir/debug" "$target_dir/wasm32-unknown-unknown" "$target_dir/front/wasm32-unknown-unknown/debug"
  fi
done

step "All tests passed"
