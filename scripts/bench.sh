#!/usr/bin/env bash
# The benchmark suite in one command: Pulse next to nginx + nchan and FastAPI + sse-starlette,
# under the same load from loadgen, on this machine's loopback.
#
#   scripts/bench.sh            the full run (about 20 minutes on 2 cores): writes
#                               bench/results/<date>.json and .md, SVG charts, and latest.*
#   scripts/bench.sh --quick    a run of about 4 minutes that checks the tooling
#                               (bench/results/<date>-quick.*; latest.* is left alone)
#
# Any other flag goes to `bench run` (`target/release/bench run --help`), e.g.
# `--only fanout,counter` or `--targets pulse,nchan`. `--no-build` (first) skips the builds
# and uses the binaries and site that are there. CARGO_TARGET_DIR and LEPTOS_SITE_ROOT are
# honoured.
#
# Installs what is missing and skips what is there: Debian's nginx, libnginx-mod-nchan,
# redis-server and chromium; a Python venv in bench/.venv with bench/starlette/requirements.txt;
# the Rust/WASM/Playwright tooling through scripts/setup.sh --test. Then it builds the release
# site and server (cargo leptos build --release), loadgen and bench, and runs the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

build=true
if [[ "${1:-}" == "--no-build" ]]; then
  build=false
  shift
fi

step() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

apt_packages=()
[[ -x /usr/sbin/nginx ]] || apt_packages+=(nginx)
[[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]] || apt_packages+=(libnginx-mod-nchan)
have redis-server || [[ -x /usr/bin/redis-server ]] || apt_packages+=(redis-server)
[[ -x /usr/bin/chromium ]] || apt_packages+=(chromium)
have python3 || apt_packages+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_packages+=(python3-venv)
if ((${#apt_packages[@]})); then
  step "Installing Debian packages: ${apt_packages[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
fi

# The sse-starlette peer's packages, reinstalled when the pinned list changes.
venv=bench/.venv
if [[ ! -x $venv/bin/python ]]; then
  step "Creating the Python venv in $venv"
  python3 -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
wanted=$(sha256sum bench/starlette/requirements.txt | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
  step "Installing the sse-starlette app's packages (bench/starlette/requirements.txt)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r bench/starlette/requirements.txt
  echo "$wanted" >"$stamp"
fi

scripts/setup.sh --test

target_dir=${CARGO_TARGET_DIR:-target}
if $build; then
  step "Building the release site and server (cargo leptos build --release)"
  cargo leptos build --release
  step "Building loadgen and bench"
  cargo build --release -p loadgen -p bench
fi

step "Running the benchmark"
exec "$target_dir/release/bench" run --out bench/results \
  --server "$target_dir/release/server" --loadgen "$target_dir/release/loadgen" \
  --site-root "${LEPTOS_SITE_ROOT:-target/site}" --venv "$venv" "$@"
