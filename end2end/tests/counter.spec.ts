import { test, expect } from './support/fixtures';
import { PulseServer } from './support/server';

const expectedMessages = Array.from({ length: 20 }, (_, i) => `Counter value ${i + 1}`);

test('the server-rendered HTML holds the page before any WASM runs', async ({ request, browser, baseURL }) => {
  const response = await request.get('/');
  expect(response.status()).toBe(200);
  const html = await response.text();
  expect(html).toContain('<h1>Live counter</h1>');
  expect(html).toContain('Connecting…');
  expect(html).toContain('class="feed"');

  // With JavaScript off, the page is exactly what the server sent.
  const context = await browser.newContext({ javaScriptEnabled: false, baseURL });
  const page = await context.newPage();
  await page.goto('/');
  await expect(page).toHaveTitle('Live counter · Pulse');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Live counter');
  await expect(page.getByTestId('status')).toHaveAttribute('data-state', 'connecting');
  await expect(page.getByTestId('status')).toHaveText('Connecting…');
  await expect(page.getByTestId('feed').locator('li')).toHaveCount(0);
  await expect(page.getByTestId('received')).toHaveText('0');
  await context.close();
});

test('after hydration every message appears in order, then the end, and the page does not reconnect', async ({ page }) => {
  const streamRequests: string[] = [];
  page.on('request', (request) => {
    if (new URL(request.url()).pathname === '/stream') streamRequests.push(request.url());
  });
  await page.goto('/');

  const items = page.getByTestId('feed').locator('li .feed-text');
  await expect(items).toHaveText([...expectedMessages, 'End of the stream']);
  await expect(page.getByTestId('status')).toHaveAttribute('data-state', 'ended');
  await expect(page.getByTestId('received')).toHaveText('20');
  await expect(page.getByTestId('announcer')).toHaveText('The stream has ended.');

  // The server asked for a 300 ms retry: had the page kept its EventSource open, the
  // browser would have reconnected several times by now.
  await page.waitForTimeout(1_500);
  expect(streamRequests).toHaveLength(1);
  await expect(items).toHaveCount(21);
});

test('leaving the page closes its stream', async ({ page }) => {
  // A slow, long stream that is still running when the reader leaves.
  const server = await PulseServer.start({ args: ['--stream-count', '1000', '--stream-interval', '200ms'] });
  await page.goto(server.url);
  await expect(page.getByTestId('status')).toHaveAttribute('data-state', 'live');
  await expect.poll(() => server.metric('pulse_streams_open{stream="counter"}')).toBe(1);

  // A client-side navigation unmounts the counter component.
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'About' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('About Pulse');
  await expect.poll(() => server.metric('pulse_streams_open{stream="counter"}')).toBe(0);
  expect(await server.metric('pulse_stream_disconnects_total{stream="counter"}')).toBe(1);
  await server.stop();
});
