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
  await expect(page.getByTestId('degraded')).toBeVisible();
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
