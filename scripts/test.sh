#!/usr/bin/env bash
# Sets up what is missing, then runs every check and test Pulse has:
# formatting, clippy (server and WASM builds apart), Rust unit and integration tests, and
# the Playwright tests in Debian's chromium against a debug build and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n\033[1;34m==>\033[0m %s\n' "$*"; }

step "Formatting"
cargo fmt --all -- --check

# Checked apart: a --workspace build would unify the app's `ssr` and `hydrate` features.
step "Clippy: server, load generator and benchmark"
cargo clippy --locked -p server -p app -p loadgen -p bench --all-targets -- -D warnings
step "Clippy: WASM frontend"
cargo clippy --locked -p frontend --target wasm32-unknown-unknown -- -D warnings

step "Rust tests"
cargo test --locked -p app -p server -p loadgen -p bench

for profile in debug release; do
  step "Build ($profile)"
  if [[ $profile == release ]]; then cargo leptos build --release; else cargo leptos build; fi
  step "Playwright against the $profile build"
  (cd end2end && PULSE_SERVER_BIN="../target/$profile/server" PULSE_PROFILE=$profile npx playwright test)
done

step "All tests passed"
