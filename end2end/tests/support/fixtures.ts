import { test as base, expect, type Page } from '@playwright/test';
import { PulseServer } from './server';

/** The fast counter every test uses unless it starts its own server. */
export const FAST_COUNTER = ['--stream-count', '20', '--stream-interval', '40ms', '--stream-retry', '300ms'];

type TestFixtures = {
  /** Console messages a test expects (network errors while a server is down, say). */
  allowedConsoleErrors: RegExp[];
  /** Stops every server a test started and left running, even when the test failed. */
  stopLeftoverServers: void;
};
type WorkerFixtures = { server: PulseServer };

/**
 * `server`: one Pulse server per worker; `baseURL` points at it.
 * `page`: fails the test on any console error, page error or hydration warning.
 */
export const test = base.extend<TestFixtures, WorkerFixtures>({
  server: [
    async ({}, use) => {
      const server = await PulseServer.start({ args: FAST_COUNTER });
      await use(server);
      await server.stop();
    },
    { scope: 'worker' },
  ],
  baseURL: async ({ server }, use) => use(server.url),
  allowedConsoleErrors: [[], { option: true }],
  stopLeftoverServers: [
    async ({}, use, testInfo) => {
      const before = new Set(PulseServer.running);
      const started = PulseServer.started.length;
      await use();
      await Promise.all([...PulseServer.running].filter((server) => !before.has(server)).map((server) => server.stop()));
      if (testInfo.status !== testInfo.expectedStatus) {
        for (const server of PulseServer.started.slice(started)) {
          await testInfo.attach(`server-${server.port}.log`, { body: server.output(), contentType: 'text/plain' });
        }
      }
    },
    { auto: true },
  ],
  page: async ({ page, allowedConsoleErrors }, use) => {
    const problems = watchConsole(page, allowedConsoleErrors);
    await use(page);
    expect(problems, 'console errors, page errors or hydration warnings').toEqual([]);
  },
});

/** Collects console errors, hydration warnings and uncaught errors of `page`. */
export function watchConsole(page: Page, allowed: RegExp[] = []): string[] {
  const problems: string[] = [];
  page.on('console', (message) => {
    const text = message.text();
    const bad = message.type() === 'error' || /hydrat/i.test(text);
    if (bad && !allowed.some((pattern) => pattern.test(text))) problems.push(`${message.type()}: ${text}`);
  });
  page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
  return problems;
}

export { expect };
