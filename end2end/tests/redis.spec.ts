import { test, expect } from './support/fixtures';
import { PulseServer } from './support/server';
import { RedisProcess } from './support/redis';
import { HUB_FLAGS, publish } from './support/mercure';

test('the page shows when Redis is down, keeps its connection, and catches up when it returns', async ({ browser }) => {
  const redis = await RedisProcess.start();
  const [a, b] = await Promise.all([
    PulseServer.start({ args: [...HUB_FLAGS, '--broker', redis.url] }),
    PulseServer.start({ args: [...HUB_FLAGS, '--broker', redis.url] }),
  ]);
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${a.url}/topics/outage`);
  const status = page.getByTestId('status');
  await expect(status).toHaveAttribute('data-state', 'live');
  const messages = page.getByTestId('feed').locator('li .feed-text');

  // Published on the other instance: it arrives through Redis.
  await publish(b, 'outage', 'before');
  await expect(messages).toHaveText(['before']);

  await redis.kill();
  await expect(status).toHaveAttribute('data-state', 'degraded');
  await expect(page.getByTestId('degraded')).toContainText('what you send meanwhile is refused');
  await expect(page.getByTestId('announcer')).toHaveText(/cannot store messages/);
  await page.getByRole('textbox', { name: 'Message', exact: true }).fill('during');
  await page.getByRole('button', { name: 'Send' }).click();
  await expect(page.getByTestId('composer-error')).toHaveText(/unavailable/);

  await redis.spawn();
  await expect(status).toHaveAttribute('data-state', 'live', { timeout: 15_000 });
  await expect(page.getByTestId('degraded')).toBeHidden();
  await publish(b, 'outage', 'after');
  await expect(messages).toHaveText(['before', 'after']);
  await context.close();
  await redis.kill();
});

test.describe('after a restart', () => {
  // The browser logs failed reconnects while the server is down.
  test.use({ allowedConsoleErrors: [/ERR_CONNECTION_REFUSED|Failed to load resource|EventSource/] });

  test('a page that reconnects after Redis came back drops the degraded warning', async ({ browser }) => {
    const redis = await RedisProcess.start();
    // A fixed subscriber key: the page's cookie must still be valid on the restarted server.
    const server = await PulseServer.start({
      args: [...HUB_FLAGS, '--subscriber-jwt-key', 'end2end-subscriber-secret-32-bytes-long', '--broker', redis.url],
    });
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${server.url}/topics/recovered`);
    const status = page.getByTestId('status');
    await expect(status).toHaveAttribute('data-state', 'live');
    await redis.kill();
    await expect(page.getByTestId('degraded')).toBeVisible();

    // Redis comes back while the page is disconnected: the hub it reconnects to is healthy
    // and has no notice to send (they are never stored), so the page must clear the
    // warning itself.
    await server.stop();
    await expect(status).toHaveAttribute('data-state', 'reconnecting');
    await redis.spawn();
    const restarted = await PulseServer.start({ ...server.options, port: server.port });
    await expect(status).toHaveAttribute('data-state', 'live', { timeout: 15_000 });
    await expect(page.getByTestId('degraded')).toBeHidden();
    await publish(restarted, 'recovered', 'after');
    await expect(page.getByTestId('feed').locator('li .feed-text')).toHaveText(['after']);
    await context.close();
    await restarted.stop();
    await redis.kill();
  });
});
