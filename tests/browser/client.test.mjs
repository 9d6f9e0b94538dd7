// notifd.js against a live notifd (node --test; run by tests/client_policy.rs, which
// starts the server and passes its addresses and tokens in the environment): what
// the client does on each refusal, a 4003 refreshed through getToken, live
// delivery, and the REST helpers. Under Node the client takes the `ws` package's
// WebSocket.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { connect, api, NotifdError } from '../../src/face/notifd.js';

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is set (tests/client_policy.rs sets it)`);
  return value;
};
const WS = env('NOTIFD_WS');
const HTTP = env('NOTIFD_HTTP');
const WORKSPACE = env('NOTIFD_WORKSPACE');
const DEADLINE_MS = 10000;

// Every connection a test opened is closed after it, passed or failed.
const opened = [];
afterEach(() => { for (const conn of opened.splice(0)) conn.close(); });

/** Resolves with the first state change that `match`es; rejects after the deadline. */
function until(events, match, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${what} within ${DEADLINE_MS} ms; states: ${JSON.stringify(events.log)}`)), DEADLINE_MS);
    events.waiters.push((state, detail) => {
      if (!match(state, detail)) return false;
      clearTimeout(timer);
      resolve({ state, detail });
      return true;
    });
  });
}

function watch(options) {
  const events = { log: [], waiters: [], notifications: [] };
  const conn = connect({
    url: WS, workspace: WORKSPACE, protocol: null, WebSocket,
    onNotification: (n) => events.notifications.push(n),
    onState: (state, detail) => {
      events.log.push([state, detail.code ?? null]);
      events.waiters = events.waiters.filter((waiter) => !waiter(state, detail));
    },
    ...options,
  });
  opened.push(conn);
  return { conn, events };
}

for (const [name, token, workspace, code] of [
  ['a bad token', 'not-a-jwt', null, 4001],
  ['a missing workspace', null, '', 4002],
  ['a workspace the token does not grant', null, 'not-granted', 4004],
]) {
  test(`${name} stops with ${code} and never reconnects`, async () => {
    let calls = 0;
    const { conn, events } = watch({
      getToken: () => { calls += 1; return token ?? env('NOTIFD_TOKEN'); },
      ...(workspace === null ? {} : { workspace }),
    });
    const { detail } = await until(events, (s) => s === 'stopped', 'stop');
    assert.equal(detail.code, code);
    assert.ok(detail.advice.startsWith('Stop'), detail.advice);
    assert.equal(calls, 1, 'getToken was asked once: no reconnect');
    assert.equal(conn.state, 'stopped');
    // The handshake completes, then the refusal comes as the close code (§3).
    assert.deepEqual(events.log.map(([s]) => s), ['connecting', 'open', 'stopped']);
  });
}

test('4003 asks getToken again and reconnects at once, then delivers live', async () => {
  const tokens = [env('NOTIFD_EXPIRED_TOKEN'), env('NOTIFD_TOKEN')];
  let calls = 0;
  const { conn, events } = watch({ getToken: async () => tokens[Math.min(calls++, 1)] });
  const { detail } = await until(events, (s) => s === 'reconnecting', 'reconnect');
  assert.equal(detail.code, 4003);
  assert.equal(detail.delay, 0, 'no backoff before the first refresh');
  await until(events, (s) => s === 'open', 'open');
  assert.equal(calls, 2);
  const created = await create({ kind: 'JOB_FAILED', title: 'live after refresh' });
  await waitFor(() => events.notifications.length === 1, 'the live notification');
  assert.equal(events.notifications[0].id, created.id);
  assert.equal(conn.lastId, created.id, 'lastId is the resume point');
  conn.close();
  assert.equal(conn.state, 'closed');
});

test('asking for notifd.v1 opens either way: with its events, or plain frames after one fallback', async () => {
  const { conn, events } = watch({ protocol: 'notifd.v1', getToken: () => env('NOTIFD_TOKEN') });
  const { detail } = await until(events, (s) => s === 'open', 'open');
  assert.ok(detail.protocol === null || detail.protocol === 'notifd.v1', `protocol ${detail.protocol}`);
  if (detail.protocol === null) {
    const states = events.log.map(([s]) => s);
    assert.deepEqual(states, ['connecting', 'reconnecting', 'connecting', 'open'], 'one attempt without the subprotocol');
  }
  const created = await create({ kind: 'either', title: 'delivered on either protocol' });
  await waitFor(() => events.notifications.some((n) => n.id === created.id), 'the live notification');
  conn.close();
});

test('the REST helpers list, mark read, count and read all', async () => {
  const inbox = api({ baseUrl: HTTP, getToken: () => env('NOTIFD_TOKEN') });
  const first = await create({ kind: 'a', title: 'one' });
  await create({ kind: 'b', title: 'two' });
  const before = (await inbox.counts({ workspace: WORKSPACE })).unread;
  const page = await inbox.list({ limit: 1, workspace: WORKSPACE });
  assert.equal(page.notifications.length, 1);
  assert.ok(page.cursor, 'a cursor to the next page');
  const next = await inbox.list({ limit: 100, cursor: page.cursor });
  assert.ok(next.notifications.some((n) => n.id === first.id), 'the older one is on the next page');
  assert.deepEqual(await inbox.markRead([first.id]), { updated: 1 });
  assert.equal((await inbox.counts({ workspace: WORKSPACE })).unread, before - 1);
  await inbox.readAll({ workspace: WORKSPACE });
  assert.equal((await inbox.counts({ workspace: WORKSPACE })).unread, 0);
  const refused = api({ baseUrl: HTTP, getToken: () => 'not-a-jwt' });
  await assert.rejects(refused.list(), (err) => err instanceof NotifdError && err.status === 401 && err.code === 'unauthorized');
});

async function create(fields) {
  const response = await fetch(`${HTTP}/v1/internal/notifications`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${env('NOTIFD_SERVICE_TOKEN')}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ user_id: env('NOTIFD_USER'), workspace: WORKSPACE, payload: {}, ...fields }),
  });
  assert.equal(response.status, 201, await response.clone().text());
  return response.json();
}

async function waitFor(condition, what) {
  const started = Date.now();
  while (!condition()) {
    assert.ok(Date.now() - started < DEADLINE_MS, `${what} within ${DEADLINE_MS} ms`);
    await new Promise((resolve) => { setTimeout(resolve, 20); });
  }
}
