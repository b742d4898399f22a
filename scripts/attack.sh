#!/usr/bin/env bash
# Plays the hostile clients of SECURITY.md against a release build on loopback and prints
# what each attack costs the server (about 2 minutes). Arguments go to `attack`
# (`target/release/attack --help`), e.g. `--only patterns --seconds 30`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --locked --release -p server -p attack
exec "$target_dir/release/attack" --server "$target_dir/release/server" "$@"
