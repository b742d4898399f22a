import { test, expect, watchConsole } from './support/fixtures';
import { PulseServer } from './support/server';
import { HUB_FLAGS, publish } from './support/mercure';
import type { Browser, Page } from '@playwright/test';

let server: PulseServer;
let topicCount = 0;

test.beforeAll(async () => {
  server = await PulseServer.start({ args: [...HUB_FLAGS, '--composer-rate', '50', '--composer-burst', '50'] });
});
test.afterAll(async () => {
  await server.stop();
});

/** A topic name no other test uses. */
function freshTopic(): string {
  topicCount += 1;
  return `e2e-${Date.now().toString(36)}-${topicCount}`;
}

/** A page in its own browser context (its own cookies), failing the test on console errors. */
async function reader(browser: Browser, problems: string[][]): Promise<Page> {
  const context = await browser.newContext({ baseURL: server.url });
  const page = await context.newPage();
  problems.push(watchConsole(page));
  return page;
}

const messages = (page: Page) => page.getByTestId('feed').locator('li .feed-text');

async function openTopic(page: Page, name: string) {
  await page.goto(`/topics/${name}`);
  await expect(page.getByTestId('status')).toHaveAttribute('data-state', 'live');
}

async function send(page: Page, text: string, membersOnly = false) {
  await page.getByRole('textbox', { name: 'Message', exact: true }).fill(text);
  if (membersOnly) await page.getByLabel('Members only').check();
  await page.getByRole('button', { name: 'Send' }).click();
  await expect(page.getByRole('textbox', { name: 'Message', exact: true })).toHaveValue('');
}

test.describe('topic pages', () => {
  const problems: string[][] = [];
  test.afterEach(() => {
    expect(problems.flat(), 'console errors or hydration warnings').toEqual([]);
    problems.length = 0;
  });

  test('a message sent in one browser appears in another, and both see who is watching', async ({ browser }) => {
    const name = freshTopic();
    const alice = await reader(browser, problems);
    const bob = await reader(browser, problems);
    await openTopic(alice, name);
    await openTopic(bob, name);
    await expect(alice.getByTestId('watchers')).toHaveText('2 watching');
    await expect(bob.getByTestId('watchers')).toHaveText('2 watching');

    await send(alice, 'Hello from Alice');
    await expect(messages(bob)).toHaveText(['Hello from Alice']);
    await expect(messages(alice)).toHaveText(['Hello from Alice']);
    await send(bob, 'Hi Alice, Bob here');
    await expect(messages(alice)).toHaveText(['Hello from Alice', 'Hi Alice, Bob here']);
    await expect(alice.locator('.feed-time').first()).toHaveText(/^\d\d:\d\d:\d\d$/);

    await bob.context().close();
    await expect(alice.getByTestId('watchers')).toHaveText('1 watching');
    await alice.context().close();
  });

  test('members-only messages reach only pages of members', async ({ browser }) => {
    const name = freshTopic();
    const member = await reader(browser, problems);
    const visitor = await reader(browser, problems);
    await openTopic(member, name);
    await openTopic(visitor, name);
    await expect(member.getByLabel('Members only')).toBeDisabled();
    await member.getByRole('button', { name: 'Join as a member' }).click();
    await expect(member.getByTestId('membership')).toContainText('You are a member');
    await expect(member.getByTestId('status')).toHaveAttribute('data-state', 'live');

    await send(member, 'for members only', true);
    await send(member, 'for everyone');
    await expect(messages(member)).toHaveText(['for members only', 'for everyone']);
    await expect(member.locator('.feed-private .feed-text')).toHaveText(['for members only']);
    await expect(messages(visitor)).toHaveText(['for everyone']);

    // A reload keeps each reader's view, and the server-rendered history is filtered too.
    await visitor.reload();
    await expect(messages(visitor)).toHaveText(['for everyone']);
    await member.reload();
    await expect(messages(member)).toHaveText(['for members only', 'for everyone']);
    // So does arriving by a link on another site: the browser still sends the page's cookie.
    await member.route('http://elsewhere.test/**', (route) =>
      route.fulfill({ contentType: 'text/html', body: `<a href="${server.url}/topics/${name}">the room</a>` }),
    );
    await member.goto('http://elsewhere.test/');
    await member.getByRole('link', { name: 'the room' }).click();
    await expect(member.getByTestId('membership')).toContainText('You are a member');
    await expect(member.getByTestId('status')).toHaveAttribute('data-state', 'live');
    await expect(messages(member)).toHaveText(['for members only', 'for everyone']);
    // Private updates published over the hub API are filtered the same way.
    await publish(server, name, 'private from the API', { private: true });
    await expect(messages(member)).toHaveText(['for members only', 'for everyone', 'private from the API']);
    await visitor.waitForTimeout(300);
    await expect(messages(visitor)).toHaveText(['for everyone']);
    await member.context().close();
    await visitor.context().close();
  });

  test('history is rendered on the server, and nothing is lost or doubled when the page takes over', async ({ browser, request }) => {
    const name = freshTopic();
    for (const text of ['one', 'two', 'three']) await publish(server, name, text);
    const html = await (await request.get(`${server.url}/topics/${name}`)).text();
    for (const text of ['one', 'two', 'three']) expect(html).toContain(`>${text}<`);

    const noScript = await browser.newContext({ javaScriptEnabled: false, baseURL: server.url });
    const staticPage = await noScript.newPage();
    await staticPage.goto(`/topics/${name}`);
    await expect(messages(staticPage)).toHaveText(['one', 'two', 'three']);
    await noScript.close();

    // A publisher races the page load: messages go out before, during and after hydration.
    const page = await reader(browser, problems);
    const sent = ['one', 'two', 'three'];
    let publishing = true;
    const publisher = (async () => {
      for (let n = 1; publishing || n <= 10; n++) {
        const text = `race ${n}`;
        await publish(server, name, text);
        sent.push(text);
        await new Promise((resolve) => setTimeout(resolve, 15));
        if (n >= 60) break;
      }
    })();
    await page.goto(`/topics/${name}`);
    await expect(page.getByTestId('status')).toHaveAttribute('data-state', 'live');
    await page.waitForTimeout(300);
    publishing = false;
    await publisher;
    await expect(messages(page)).toHaveText(sent);
    await page.context().close();
  });

  test('an HTML or script payload is shown as text', async ({ browser }) => {
    const name = freshTopic();
    const payload = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold</b>';
    await publish(server, name, payload);
    const page = await reader(browser, problems);
    await openTopic(page, name);
    await expect(messages(page)).toHaveText([payload]);
    await send(page, payload);
    await expect(messages(page)).toHaveText([payload, payload]);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    await expect(page.locator('.feed b')).toHaveCount(0);
    await page.context().close();
  });

  test('the list is capped, keeps the reader at the end, and does not pull a reader who scrolled up', async ({ browser }) => {
    const name = freshTopic();
    for (let n = 1; n <= 205; n++) await publish(server, name, `message ${n}`);
    const page = await reader(browser, problems);
    await openTopic(page, name);
    await expect(messages(page)).toHaveCount(200);
    await expect(page.getByTestId('evicted')).toHaveText('5 older messages not shown');
    const scroller = page.getByTestId('feed-scroll');
    const gapToEnd = () => scroller.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight);
    await expect.poll(gapToEnd).toBeLessThan(5);

    await publish(server, name, 'message 206');
    await expect(messages(page).last()).toHaveText('message 206');
    await expect(page.getByTestId('evicted')).toHaveText('6 older messages not shown');
    await expect.poll(gapToEnd).toBeLessThan(5);

    await scroller.evaluate((el) => el.scrollTo({ top: 0 }));
    await expect.poll(() => scroller.evaluate((el) => el.scrollTop)).toBe(0);
    await publish(server, name, 'message 207');
    await expect(messages(page).last()).toHaveText('message 207');
    expect(await scroller.evaluate((el) => el.scrollTop)).toBe(0);
    // The rows being read stay: nothing is evicted while the reader is scrolled up.
    await expect(messages(page)).toHaveCount(201);
    await expect(messages(page).first()).toHaveText('message 7');
    await expect(page.getByTestId('evicted')).toHaveText('6 older messages not shown');
    const jump = page.getByRole('button', { name: /new ↓/ });
    await expect(jump).toHaveText('1 new ↓');
    // The button stays the same element while its count goes up (Leptos patches its text
    // in place), so it does not flicker or lose focus.
    await jump.evaluate((el) => { el.dataset.mark = 'first'; });
    await publish(server, name, 'message 208');
    await expect(jump).toHaveText('2 new ↓');
    await expect(jump).toHaveAttribute('data-mark', 'first');
    expect(await scroller.evaluate((el) => el.scrollTop)).toBe(0);
    await page.getByRole('button', { name: /2 new/ }).click();
    await expect(jump).toHaveCount(0);
    await expect.poll(gapToEnd).toBeLessThan(5);
    // Back at the end, the list is trimmed to its cap again.
    await expect(messages(page)).toHaveCount(200);
    await expect(messages(page).first()).toHaveText('message 9');
    await expect(page.getByTestId('evicted')).toHaveText('8 older messages not shown');
    await page.context().close();
  });

  test('screenshots at desktop and phone widths', async ({ browser }, testInfo) => {
    const name = freshTopic();
    for (const text of ['Deploy finished in 42 s', 'Anyone up for lunch?', 'Release notes are out: https://example.com/notes']) {
      await publish(server, name, text);
    }
    for (const [label, viewport] of [
      ['desktop', { width: 1280, height: 800 }],
      ['phone', { width: 390, height: 844 }],
    ] as const) {
      const context = await browser.newContext({ baseURL: server.url, viewport });
      const page = await context.newPage();
      problems.push(watchConsole(page));
      await openTopic(page, name);
      await expect(messages(page)).toHaveCount(3);
      const box = await page.locator('.card').first().boundingBox();
      expect(box?.width ?? 0).toBeLessThanOrEqual(viewport.width);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      expect(overflow).toBe(0);
      await testInfo.attach(`topic-${label}`, { body: await page.screenshot({ fullPage: true }), contentType: 'image/png' });
      await context.close();
    }
  });
});

test('the composer shows errors from the server in the form', async ({ browser }) => {
  const strict = await PulseServer.start({ args: [...HUB_FLAGS, '--composer-rate', '0.1', '--composer-burst', '1'] });
  const context = await browser.newContext({ baseURL: strict.url });
  const page = await context.newPage();
  const problems = watchConsole(page, [/Failed to load resource/]);
  await page.goto('/topics/rate-limited');
  await expect(page.getByTestId('status')).toHaveAttribute('data-state', 'live');
  await send(page, 'first');
  await expect(messages(page)).toHaveText(['first']);
  await page.getByRole('textbox', { name: 'Message', exact: true }).fill('second');
  await page.getByRole('button', { name: 'Send' }).click();
  await expect(page.getByTestId('composer-error')).toHaveText(/sending messages too fast/);
  await expect(page.getByRole('textbox', { name: 'Message', exact: true })).toHaveValue('second');
  await expect(messages(page)).toHaveText(['first']);
  expect(problems).toEqual([]);
  await context.close();
  await strict.stop();
});

test('the home page links to the counter and to topics', async ({ page }) => {
  await page.goto('/');
  await page.getByRole('link', { name: '#general' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('#general');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Topics' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Topics');
  // A name the browser's pattern lets through but the server refuses is explained.
  await page.getByLabel('Topic name').fill('..');
  await page.getByRole('button', { name: 'Open' }).click();
  await expect(page.getByTestId('open-topic-error')).toContainText('1 to 64 letters');
  await page.getByLabel('Topic name').fill('my-new-topic');
  await page.getByRole('button', { name: 'Open' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('#my-new-topic');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Counter' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Live counter');
});
