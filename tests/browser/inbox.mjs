// The inbox page in a real browser (run by tests/browser.rs: `node inbox.mjs
// SCENARIO`, the server's addresses and tokens in the environment). Each scenario
// throws (exit 1) on the first broken expectation and prints `ok SCENARIO` last.
import assert from 'node:assert/strict';
import { WebSocketServer } from 'ws';
import {
  env, newPage, signIn, waitForStatus, badge, waitForBadge, listed, create,
  commands, assertNoProblems, withBrowser,
} from './harness.mjs';

const SAMPLES = [
  { kind: 'JOB_FAILED', type: 'error', title: 'Nightly import failed', message: 'Job #4821 stopped at step 3 of 5: the CSV has 2 malformed rows.' },
  { kind: 'record_created', type: 'success', title: 'New order', message: 'Order #12345 has been placed by Dana Kim.' },
  { kind: 'quota.warning', type: 'warning', title: 'Storage at 85%', message: 'Workspace acme uses 42.5 of 50 GB.' },
  { kind: 'function_complete', type: 'info', title: 'Report ready', message: 'The weekly revenue report finished in 12 s.' },
  { kind: 'maintenance', type: 'alert', title: 'Maintenance tonight at 22:00 UTC', message: 'Expect up to 10 minutes without live updates.' },
];

/** Signs in with a bad token and an expired one (clear errors), then a good one: paging, a live
 *  arrival, mark read (badge drops), keys, mark all read; and the README's picture. */
async function signin() {
  const created = [];
  for (let i = 0; i < 22; i += 1) created.push(await create({ ...SAMPLES[i % SAMPLES.length] }));
  await withBrowser(async (browser) => {
    const page = await newPage(browser);
    await signIn(page, { token: 'not-a-jwt' });
    await page.waitForSelector('#signin-error:not([hidden])');
    const error = await page.textContent('#signin-error');
    assert.match(error, /^The server refused this token: /, error);
    assert.equal(await page.isHidden('#inbox'), true, 'still signed out');
    await signIn(page, { token: env('NOTIFD_EXPIRED_TOKEN') });
    await page.waitForFunction(() => document.getElementById('signin-error').textContent.startsWith('This token has expired'));
    const port = await page.inputValue('#ws');
    await page.fill('#ws', 'not a port');
    await signIn(page, { token: env('NOTIFD_TOKEN') });
    assert.match(await page.textContent('#signin-error'), /^WebSocket: give a port/);
    assert.equal(await page.isHidden('#inbox'), true, 'still signed out');
    await page.fill('#ws', port);

    await signIn(page, { token: env('NOTIFD_TOKEN') });
    await waitForStatus(page, 'open');
    await waitForBadge(page, 22);
    assert.deepEqual(await listed(page), created.slice(2).reverse().map((n) => n.id), 'the first page, newest first');
    await page.click('#more');
    await page.waitForFunction(() => document.querySelectorAll('#list .item').length === 22);
    assert.equal(await page.isHidden('#more'), true, 'no more pages');

    const live = await create({ kind: 'deploy.done', type: 'success', title: 'Deploy finished', message: 'api v2.14.0 is live in eu-west.' });
    await page.waitForSelector(`#list .item[data-id="${live.id}"].unread`);
    assert.equal((await listed(page))[0], live.id, 'the live one is on top');
    await waitForBadge(page, 23);

    await page.click(`#list .item[data-id="${live.id}"] .toggle-read`);
    await page.waitForSelector(`#list .item[data-id="${live.id}"]:not(.unread)`);
    await waitForBadge(page, 22);

    // Keys: j moves to the next notification, r marks it read.
    await page.focus(`#list .item[data-id="${live.id}"]`);
    await page.keyboard.press('j');
    const second = (await listed(page))[1];
    assert.equal(await page.evaluate(() => document.activeElement.dataset.id), second);
    await page.keyboard.press('r');
    await waitForBadge(page, 21);

    await page.screenshot({ path: env('NOTIFD_SCREENSHOT') });

    await page.click('#read-all');
    await waitForBadge(page, 0);
    assert.equal(await page.$$eval('#list .item.unread', (items) => items.length), 0);
    await states(page, live.id);
    assertNoProblems(page);
  });
}

/** Mark unread, archive, the Archived view and unarchive: offered exactly when the
 *  server's route table has them (NOTIFD_EXPECT_STATES, from tests/browser.rs). */
async function states(page, id) {
  const expected = env('NOTIFD_EXPECT_STATES') === '1';
  assert.equal(await page.isVisible('.tab[data-view="archived"]'), expected, 'the Archived view iff the server archives');
  const item = `#list .item[data-id="${id}"]`;
  assert.equal(await page.isVisible(`${item} .toggle-archive`), expected, 'Archive iff the server archives');
  assert.equal(await page.isVisible(`${item} .toggle-read`), expected, 'Mark unread on a read one iff the server has it');
  if (!expected) return;
  await page.click(`${item} .toggle-read`);
  await page.waitForSelector(`${item}.unread`);
  await waitForBadge(page, 1);
  await page.click(`${item} .toggle-archive`);
  await page.waitForSelector(item, { state: 'detached' });
  await waitForBadge(page, 0); // archived ones leave the counts
  await page.click('.tab[data-view="archived"]');
  await page.waitForSelector(item);
  assert.deepEqual(await listed(page), [id], 'the Archived view lists the archived one');
  await page.click(`${item} .toggle-archive`);
  await page.waitForSelector(item, { state: 'detached' });
  await waitForBadge(page, 1);
  await page.click('.tab[data-view="all"]');
  await page.waitForSelector(`${item}.unread`);
}

/** The server stops and starts again on the same ports while another instance takes
 *  creates and a read: the page reconnects with `since`, shows each notification
 *  once, and the read one as read. */
async function restart() {
  const next = commands();
  await withBrowser(async (browser) => {
    const page = await newPage(browser);
    const sockets = [];
    page.on('websocket', (socket) => sockets.push(new URL(socket.url())));
    await signIn(page, { token: env('NOTIFD_TOKEN') });
    await waitForStatus(page, 'open');
    const first = await create({ kind: 'one', title: 'before the restart' });
    await page.waitForSelector(`#list .item[data-id="${first.id}"]`);

    console.log('stop');
    assert.equal(await next(), 'stopped');
    await waitForStatus(page, 'reconnecting');
    const other = env('NOTIFD_OTHER_HTTP');
    const during = [await create({ kind: 'two', title: 'while down' }, other), await create({ kind: 'three', title: 'while down' }, other)];
    // Another device reads the first one meanwhile: the page learns it on reconnect.
    const read = await fetch(`${other}/v1/notifications/read`, {
      method: 'PATCH',
      headers: { Authorization: `Bearer ${env('NOTIFD_TOKEN')}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ ids: [first.id] }),
    });
    assert.equal(read.status, 200);
    console.log('start');
    assert.equal(await next(), 'started');
    await waitForStatus(page, 'open');
    const resumed = sockets.at(-1);
    assert.equal(resumed.searchParams.get('since'), first.id, `the reconnect resumes after the last id: ${resumed.search.replace(/token=[^&]*/, 'token=…')}`);
    const after = await create({ kind: 'four', title: 'after the restart' });
    await page.waitForSelector(`#list .item[data-id="${after.id}"]`);
    const ids = await listed(page);
    assert.deepEqual(ids, [after, ...during.reverse(), first].map((n) => n.id), 'each once, newest first');
    await page.waitForSelector(`#list .item[data-id="${first.id}"]:not(.unread)`);
    await waitForBadge(page, 3);
    assert.equal(await badge(page), 3);
    assertNoProblems(page);
  });
}

/** Two tabs of one user: a read in one shows in the other without a reload
 *  (the notifd.v1 `updated` and `counts` events). */
async function twoTabs() {
  await withBrowser(async (browser) => {
    const [one, two] = [await newPage(browser), await newPage(browser)];
    for (const page of [one, two]) {
      await signIn(page, { token: env('NOTIFD_TOKEN') });
      await waitForStatus(page, 'open');
    }
    const n = await create({ kind: 'shared', title: 'seen in both tabs' });
    for (const page of [one, two]) await page.waitForSelector(`#list .item[data-id="${n.id}"].unread`);
    assert.match(await two.textContent('#status-text'), /notifd\.v1/, 'the server speaks notifd.v1');
    await one.click(`#list .item[data-id="${n.id}"] .toggle-read`);
    await two.waitForSelector(`#list .item[data-id="${n.id}"]:not(.unread)`);
    await waitForBadge(two, 0);
    assertNoProblems(one);
    assertNoProblems(two);
  });
}

/** The README's picture (light theme, or NOTIFD_COLOR_SCHEME): a few notifications,
 *  one read, one live. */
async function screenshot() {
  for (const sample of SAMPLES) await create(sample);
  await withBrowser(async (browser) => {
    const page = await newPage(browser);
    // Reduced motion: no arrival highlight, so the picture shows the resting page.
    await page.emulateMedia({ colorScheme: process.env.NOTIFD_COLOR_SCHEME ?? 'light', reducedMotion: 'reduce' });
    await page.setViewportSize({ width: 1000, height: 640 });
    await signIn(page, { token: env('NOTIFD_TOKEN') });
    await waitForStatus(page, 'open');
    await waitForBadge(page, SAMPLES.length);
    const ids = await listed(page);
    await page.click(`#list .item[data-id="${ids[3]}"] .toggle-read`);
    await waitForBadge(page, SAMPLES.length - 1);
    const live = await create({ kind: 'deploy.done', type: 'success', title: 'Deploy finished', message: 'api v2.14.0 is live in eu-west.' });
    await page.waitForSelector(`#list .item[data-id="${live.id}"]`);
    await waitForBadge(page, SAMPLES.length);
    await page.mouse.move(0, 0);
    await page.evaluate(() => document.activeElement?.blur());
    await page.screenshot({ path: env('NOTIFD_SCREENSHOT') });
    assertNoProblems(page);
  });
}

/** With one connection allowed per user and workspace, a second tab replaces the
 *  first (4005): the first says so and stops, and its Reconnect button takes over. */
async function replaced() {
  await withBrowser(async (browser) => {
    const [one, two] = [await newPage(browser), await newPage(browser)];
    await signIn(one, { token: env('NOTIFD_TOKEN') });
    await waitForStatus(one, 'open');
    await signIn(two, { token: env('NOTIFD_TOKEN') });
    await waitForStatus(two, 'open');
    await waitForStatus(one, 'stopped');
    assert.equal(await one.textContent('#status-text'), 'Another tab or device took over (4005)');
    await one.click('#reconnect');
    await waitForStatus(two, 'stopped');
    await waitForStatus(one, 'open');
    assert.equal(await one.isHidden('#reconnect'), true);
    const n = await create({ kind: 'after.takeover', title: 'to the tab that took over' });
    await one.waitForSelector(`#list .item[data-id="${n.id}"]`);
    assertNoProblems(one);
    assertNoProblems(two);
  });
}

/** The page on the notifd.v1 protocol, against a scripted peer that selects it (the
 *  REST API is the real server's): `counts` set the badge, a `notification` event
 *  lands on top, `updated` by ids and by filter change the list without a reload. */
async function events() {
  const listed1 = await create({ kind: 'listed', title: 'listed through REST' });
  const peer = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (asked) => (asked.has('notifd.v1') ? 'notifd.v1' : false) });
  await new Promise((resolve) => { peer.on('listening', resolve); });
  const connected = new Promise((resolve) => { peer.on('connection', resolve); });
  try {
    await withBrowser(async (browser) => {
      const page = await newPage(browser);
      await page.goto(`${env('NOTIFD_HTTP')}/?ws=${peer.address().port}`);
      await signIn(page, { token: env('NOTIFD_TOKEN') });
      const socket = await connected;
      const send = (event) => socket.send(JSON.stringify(event));
      await waitForStatus(page, 'open');
      assert.equal(await page.textContent('#status-text'), 'Live · notifd.v1');
      await page.waitForSelector(`#list .item[data-id="${listed1.id}"].unread`);
      send({ event: 'synced', through: null });
      send({ event: 'counts', unread: 7, unseen: 7 });
      await waitForBadge(page, 7);
      // Created for real (the page's socket is the peer's, so only the peer delivers it).
      const newer = await create({ kind: 'pushed', title: 'pushed as an event' });
      send({ event: 'notification', notification: newer });
      await page.waitForSelector(`#list .item[data-id="${newer.id}"].unread`);
      assert.equal((await listed(page))[0], newer.id, 'the pushed one is on top');
      send({ event: 'updated', ids: [listed1.id], changes: { read_at: '2026-12-02T10:00:00.000Z' } });
      await page.waitForSelector(`#list .item[data-id="${listed1.id}"]:not(.unread)`);
      send({ event: 'updated', filter: { workspace: null, kind: null }, through: newer.id, changes: { archived_at: '2026-12-02T10:00:01.000Z' } });
      await page.waitForFunction(() => document.querySelectorAll('#list .item').length === 0);
      send({ event: 'counts', unread: 0, unseen: 0 });
      await waitForBadge(page, 0);
      assertNoProblems(page);
    });
  } finally {
    peer.close();
  }
}

const SCENARIOS = { signin, restart, replaced, events, 'two-tabs': twoTabs, screenshot };
const name = process.argv[2];
assert.ok(SCENARIOS[name], `scenario one of ${Object.keys(SCENARIOS).join(', ')}`);
await SCENARIOS[name]();
console.log(`ok ${name}`);
process.exit(0);
