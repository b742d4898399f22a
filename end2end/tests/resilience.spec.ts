import { test, expect } from './support/fixtures';
import { PulseServer } from './support/server';
import { selfSignedCertificate } from './support/tls';
import { HUB_FLAGS, publish, publisherToken } from './support/mercure';

const allMessages = Array.from({ length: 20 }, (_, i) => `Counter value ${i + 1}`);

// The browser logs failed reconnects while the server is down.
test.use({ allowedConsoleErrors: [/ERR_CONNECTION_REFUSED|Failed to load resource|EventSource/] });

test('the page carries on after a server restart, with nothing lost or repeated', async ({ page }) => {
  const server = await PulseServer.start({
    args: ['--stream-count', '20', '--stream-interval', '150ms', '--stream-retry', '400ms'],
  });
  await page.goto(server.url);
  const items = page.getByTestId('feed').locator('li .feed-text');
  await expect.poll(() => items.count()).toBeGreaterThanOrEqual(5);

  // Stop the server mid-stream: the stream ends without end_event, so the page reconnects.
  await server.stop();
  const status = page.getByTestId('status');
  await expect(status).toHaveAttribute('data-state', 'reconnecting');
  await expect(status).toHaveText('Reconnecting (retry in 400 ms)');
  await expect(page.getByTestId('announcer')).toHaveText('Connection lost. Reconnecting in 400 ms.');
  const shownWhileDown = await items.count();
  expect(shownWhileDown).toBeLessThan(20);

  const restarted = await PulseServer.start({ ...server.options, port: server.port });
  await expect(items).toHaveText([...allMessages, 'End of the stream']);
  await expect(status).toHaveAttribute('data-state', 'ended');
  await expect(page.getByTestId('received')).toHaveText('20');
  // The new server saw one resumed stream, from where the page had got to.
  expect(await restarted.metric('pulse_stream_resumes_total{stream="counter"}')).toBe(1);
  await restarted.stop();
});

test('when a proxy refuses the reconnect, the page tries again later and resumes where it was', async ({ page }) => {
  const server = await PulseServer.start({
    args: ['--stream-count', '20', '--stream-interval', '150ms', '--stream-retry', '400ms'],
  });
  await page.goto(server.url);
  const items = page.getByTestId('feed').locator('li .feed-text');
  await expect.poll(() => items.count()).toBeGreaterThanOrEqual(5);

  // A proxy in front of a restarting server answers 502: the browser gives up on the stream
  // (an HTTP error closes an EventSource for good), and the page takes over.
  const refused: string[] = [];
  await page.route('**/stream**', (route) => {
    refused.push(route.request().url());
    return route.fulfill({ status: 502, body: 'Bad Gateway' });
  });
  await server.stop();
  const status = page.getByTestId('status');
  await expect(status).toHaveAttribute('data-state', 'failed');
  await expect(status).toHaveText(/^Disconnected \(retry in [\d.]+ m?s\)$/);
  await expect(page.getByTestId('announcer')).toHaveText(/^The server refused the connection\. Trying again in /);
  // The page's own attempts resume from the last message it got.
  await expect.poll(() => refused.some((url) => /\/stream\?lastEventId=\d+$/.test(url))).toBe(true);
  const shownWhileRefused = await items.count();
  expect(shownWhileRefused).toBeLessThan(20);

  const restarted = await PulseServer.start({ ...server.options, port: server.port });
  await page.unroute('**/stream**');
  await expect(items).toHaveText([...allMessages, 'End of the stream']);
  await expect(status).toHaveAttribute('data-state', 'ended');
  expect(await restarted.metric('pulse_stream_resumes_total{stream="counter"}')).toBe(1);
  await restarted.stop();
});

test('a topic page whose token the restarted server no longer accepts gets a new one and carries on', async ({ page, browser }) => {
  // No fixed subscriber key: the restarted server signs with a new random one, so the hub
  // answers the page's reconnect, which carries the old token in its cookie, with 401.
  const server = await PulseServer.start({ args: HUB_FLAGS });
  await page.goto(`${server.url}/topics/renewed`);
  await page.getByRole('button', { name: 'Join as a member' }).click();
  await expect(page.getByTestId('membership')).toContainText('You are a member');
  const status = page.getByTestId('status');
  await expect(status).toHaveAttribute('data-state', 'live');
  // A second reader, who leaves while the server is down.
  const other = await browser.newContext();
  await (await other.newPage()).goto(`${server.url}/topics/renewed`);
  await expect(page.getByTestId('watchers')).toHaveText('2 watching');
  const before = (await page.context().cookies()).find((cookie) => cookie.name === 'mercure_access_token');
  expect(before).toBeDefined();
  // A session cookie, which outlives its token: a reconnect after the token ran out is
  // refused and the page gets a new one, as here, rather than going without a token.
  expect(before?.expires).toBe(-1);

  await server.stop();
  await expect(status).toHaveAttribute('data-state', 'reconnecting');
  await other.close();
  const refused = page.waitForResponse((response) => response.url().includes('/.well-known/mercure?') && response.status() === 401);
  const restarted = await PulseServer.start({ ...server.options, port: server.port });
  await refused;
  await expect(status).toHaveAttribute('data-state', 'live', { timeout: 15_000 });
  const after = (await page.context().cookies()).find((cookie) => cookie.name === 'mercure_access_token');
  expect(after?.value).not.toBe(before?.value);
  // The new token keeps the page's membership.
  await publish(restarted, 'renewed', 'for members, after the restart', { private: true });
  await expect(page.getByTestId('feed').locator('li .feed-text')).toHaveText(['for members, after the restart']);
  // The other reader and the page's own first connection left without the new server
  // knowing (so it never said so): the page asked who watches now rather than count them.
  await expect(page.getByTestId('watchers')).toHaveText('1 watching');
  await restarted.stop();
});

test('the status shows connecting, live and ended, with the count', async ({ page }) => {
  const server = await PulseServer.start({ args: ['--stream-count', '5', '--stream-interval', '300ms'] });
  await page.goto(server.url);
  const status = page.getByTestId('status');
  await expect(status).toHaveAttribute('data-state', 'live');
  await expect(status).toHaveText('Live');
  await expect(page.getByTestId('announcer')).toHaveText('Connected. Messages arrive live.');
  await expect(page.getByTestId('received')).not.toHaveText('0');
  await expect(status).toHaveAttribute('data-state', 'ended');
  await expect(status).toHaveText('Ended');
  await expect(page.getByTestId('received')).toHaveText('5');
  await expect(page.locator('.feed-count')).toHaveText('5 of 5 messages');
  await server.stop();
});

test('ten tabs on one origin all stream over HTTP/2', async ({ browser }) => {
  // Ten debug builds of the page hydrating at once on two cores take a while.
  test.setTimeout(120_000);
  const { cert, key } = selfSignedCertificate();
  // A long stream, so that every tab is still streaming when the last one connects.
  const server = await PulseServer.start({
    args: ['--stream-count', '100000', '--stream-interval', '200ms', '--stream-retry', '500ms', '--tls-cert', cert, '--tls-key', key],
    env: { RUST_LOG: 'info,server=debug' },
  });
  const origin = `https://127.0.0.1:${server.port}`;
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const pages = await Promise.all(Array.from({ length: 10 }, () => context.newPage()));
  await Promise.all(pages.map((page) => page.goto(origin)));
  // All ten are live at the same time: over HTTP/1.1 the seventh would wait for a free
  // connection that never comes (each stream holds one).
  await Promise.all(
    pages.map((page) => expect(page.getByTestId('status')).toHaveAttribute('data-state', 'live', { timeout: 60_000 })),
  );
  await expect.poll(() => server.metric('pulse_streams_open{stream="counter"}')).toBe(10);
  for (const page of pages) {
    const protocol = await page.evaluate(
      () => (performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming).nextHopProtocol,
    );
    expect(protocol).toBe('h2');
    await expect(page.getByTestId('feed').locator('li .feed-text').nth(2)).toHaveText('Counter value 3');
  }
  await context.close();
  await server.stop();
});

test.describe('over TLS', () => {
  test.use({ ignoreHTTPSErrors: true });

  test('a topic page works over HTTP/2, with its members-only messages', async ({ page }) => {
    const { cert, key } = selfSignedCertificate();
    const server = await PulseServer.start({ args: [...HUB_FLAGS, '--tls-cert', cert, '--tls-key', key] });
    await page.goto(`${server.url}/topics/secure`);
    await page.getByRole('button', { name: 'Join as a member' }).click();
    await expect(page.getByTestId('membership')).toContainText('You are a member');
    await expect(page.getByTestId('status')).toHaveAttribute('data-state', 'live');
    const protocol = await page.evaluate(
      () => (performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming).nextHopProtocol,
    );
    expect(protocol).toBe('h2');
    // Published with the page's request context, which accepts the self-signed certificate.
    const published = await page.request.post(`${server.url}/.well-known/mercure`, {
      headers: { authorization: `Bearer ${publisherToken(server)}` },
      form: { topic: '/topics/secure', data: 'for members, over HTTP/2', private: 'on' },
    });
    expect(published.status()).toBe(200);
    await expect(page.getByTestId('feed').locator('li .feed-text')).toHaveText(['for members, over HTTP/2']);
    await server.stop();
  });
});
