// Time from navigation to the first counter message on Pulse's page, in Debian's chromium.
//
//   node bench/page/first-message.mjs --url http://127.0.0.1:PORT/ [--runs 10] [--timeout-ms 15000]
//        [--chromium /usr/bin/chromium] [--out results.json]
//
// Each run opens the page in a fresh browser context (an empty cache, like a first visit)
// and reads, inside the page, `performance.now()` (milliseconds since the navigation
// started) at the moment the feed shows "Counter value 1": the server-rendered page has an
// empty feed, so that moment includes loading and hydrating the WASM, opening the
// EventSource and receiving the first event. One run before the measured ones warms up
// the browser process. Prints one JSON document on stdout (and writes it to --out):
//   {"runs_ms":[…],"median_ms":…,"min_ms":…,"max_ms":…,"dom_content_loaded_ms":[…],"errors":[…]}
//
// Uses the Playwright package installed in end2end/node_modules (scripts/setup.sh --test).

import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../../end2end/package.json'));
const { chromium } = require('@playwright/test');

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`);
  return index > 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback;
}

const url = option('url');
const runs = Math.max(1, Math.min(100, Number(option('runs', '10'))));
const timeout = Math.max(1000, Math.min(60000, Number(option('timeout-ms', '15000'))));
const executablePath = option('chromium', '/usr/bin/chromium');
if (!url || !/^http:\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?\//.test(url)) {
  console.error('first-message: --url must be an http:// URL on loopback');
  process.exit(2);
}

// Installed before any page script: notes when the first counter message is in the feed.
function watchForFirstMessage() {
  const found = () => {
    const feed = document.querySelector('[data-testid="feed"]');
    if (!feed) return false;
    for (const item of feed.querySelectorAll('li')) {
      if (item.textContent && item.textContent.includes('Counter value 1')) return true;
    }
    return false;
  };
  const observer = new MutationObserver(() => {
    if (window.__firstMessageMs === undefined && found()) {
      window.__firstMessageMs = performance.now();
      observer.disconnect();
    }
  });
  observer.observe(document, { childList: true, subtree: true, characterData: true });
}

const browser = await chromium.launch({
  executablePath,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

const result = { url, runs_ms: [], dom_content_loaded_ms: [], errors: [] };
try {
  for (let run = 0; run <= runs; run++) {
    let failed = false;
    const context = await browser.newContext();
    const page = await context.newPage();
    const pageErrors = [];
    page.on('pageerror', (error) => pageErrors.push(`page error: ${String(error)}`));
    page.on('console', (message) => {
      if (message.type() === 'error') pageErrors.push(`console error: ${message.text()}`);
    });
    await page.addInitScript(watchForFirstMessage);
    try {
      await page.goto(url, { waitUntil: 'commit', timeout });
      await page.waitForFunction(() => window.__firstMessageMs !== undefined, null, { timeout });
      const [first, dcl] = await page.evaluate(() => {
        const nav = performance.getEntriesByType('navigation')[0];
        return [window.__firstMessageMs, nav ? nav.domContentLoadedEventEnd : null];
      });
      if (run > 0) {
        result.runs_ms.push(Math.round(first * 10) / 10);
        if (dcl !== null) result.dom_content_loaded_ms.push(Math.round(dcl * 10) / 10);
      }
    } catch (error) {
      result.errors.push(`run ${run}: ${String(error).split('\n')[0]}`);
      failed = true;
    }
    for (const error of pageErrors) result.errors.push(`run ${run}: ${error.slice(0, 300)}`);
    await context.close();
    // A page that does not work the first time will not work the next: stop there.
    if (failed && run === 0) break;
  }
} finally {
  await browser.close();
}

const sorted = [...result.runs_ms].sort((a, b) => a - b);
if (sorted.length) {
  const mid = Math.floor(sorted.length / 2);
  result.median_ms = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  result.min_ms = sorted[0];
  result.max_ms = sorted[sorted.length - 1];
}
const json = JSON.stringify(result);
const outPath = option('out');
if (outPath) writeFileSync(outPath, `${json}\n`);
console.log(json);
process.exit(sorted.length ? 0 : 1);
