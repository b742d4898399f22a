#!/usr/bin/env bash
# Prints the size of the built WASM bundle: raw, gzip (-9) and brotli (quality 11).
# Run after `cargo leptos build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
node - "${1:-target/site/pkg}" <<'JS'
const fs = require('fs'), path = require('path'), zlib = require('zlib');
const dir = process.argv[2];
const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
for (const file of fs.readdirSync(dir).filter((f) => /\.(wasm|js|css)$/.test(f)).sort()) {
  const raw = fs.readFileSync(path.join(dir, file));
  const gz = zlib.gzipSync(raw, { level: 9 }).length;
  const br = zlib.brotliCompressSync(raw, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11 } }).length;
  console.log(`${file.padEnd(16)} raw ${kb(raw.length).padStart(10)}   gzip ${kb(gz).padStart(10)}   brotli ${kb(br).padStart(10)}`);
}
JS
