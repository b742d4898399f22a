#!/usr/bin/env bash
# Sets up what is missing, then serves Pulse on http://127.0.0.1:3000 and rebuilds on change.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
exec cargo leptos watch "$@"
