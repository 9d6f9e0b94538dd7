// notifd.js against a scripted WebSocket peer (node --test; run by
// tests/client_policy.rs): a real `ws` server on 127.0.0.1 that plays the server's
// part frame by frame, for what notifd itself cannot be made to do on cue: select
// notifd.v1 and send its events, send a notification twice, accept and drop at once
// (the flapping the first document's manager falls into), stay up and then drop.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket, WebSocketServer } from 'ws';
import { connect } from '../../src/face/notifd.js';

const FAST = Object.freeze({ base: 20, cap: 160, overloadFloor: 50, stableAfter: 300 });
const DEADLINE_MS = 10000;
const ID = (n) => `0190a000-0000-7000-8000-${String(n).padStart(12, '0')}`;
const note = (n) => ({ id: ID(n), title: `n${n}`, kind: 'k', read: false });

// Whatever a test opened is closed after it, passed or failed, so a failure ends
// the run instead of holding it open.
const opened = [];
afterEach(() => { for (const thing of opened.splice(0)) thing.close(); });

/** A peer on a free port: `script(socket, url, index)` runs for each connection. */
async function peer(script, { protocol = null, record = null } = {}) {
  const server = new WebSocketServer({
    host: '127.0.0.1', port: 0,
    handleProtocols: (asked) => (protocol && asked.has(protocol) ? protocol : false),
  });
  await new Promise((resolve) => { server.on('listening', resolve); });
  let index = 0;
  server.on('connection', (socket, request) => {
    record?.push(request.headers['sec-websocket-protocol'] ?? null);
    script(socket, new URL(request.url, 'ws://peer'), index++);
  });
  const handle = { url: `ws://127.0.0.1:${server.address().port}/`, close: () => server.close() };
  opened.push(handle);
  return handle;
}

function client(url, extra = {}) {
  const got = { notifications: [], updates: [], counts: [], synced: [], states: [] };
  const conn = connect({
    url, workspace: 'acme', getToken: () => 'token', WebSocket, backoff: FAST, protocol: null,
    onNotification: (n) => got.notifications.push(n.id),
    onUpdate: (u) => got.updates.push(u),
    onCounts: (c) => got.counts.push(c),
    onSynced: (through) => got.synced.push(through),
    onState: (state, detail) => got.states.push({ state, at: Date.now(), ...detail }),
    ...extra,
  });
  opened.push(conn);
  return { conn, got };
}

async function until(condition, what) {
  const started = Date.now();
  while (!condition()) {
    assert.ok(Date.now() - started < DEADLINE_MS, `${what} within ${DEADLINE_MS} ms`);
    await new Promise((resolve) => { setTimeout(resolve, 5); });
  }
}

test('notifd.v1: events reach their callbacks, a repeated notification once', async () => {
  const server = await peer((socket) => {
    for (const event of [
      { event: 'notification', notification: note(1) },
      { event: 'notification', notification: note(1) },
      { event: 'synced', through: ID(1) },
      { event: 'counts', unread: 1, unseen: 1 },
      { event: 'updated', ids: [ID(1)], changes: { read_at: '2026-12-02T10:00:00.000Z' } },
      { event: 'some-future-event', x: 1 },
      { event: 'counts', unread: 0, unseen: 0 },
    ]) socket.send(JSON.stringify(event));
  }, { protocol: 'notifd.v1' });
  const { conn, got } = client(server.url, { protocol: 'notifd.v1' });
  await until(() => got.counts.length === 2, 'both counts');
  assert.equal(conn.protocol, 'notifd.v1');
  assert.deepEqual(got.notifications, [ID(1)]);
  assert.deepEqual(got.synced, [ID(1)]);
  assert.deepEqual(got.counts, [{ unread: 1, unseen: 1 }, { unread: 0, unseen: 0 }]);
  assert.equal(got.updates.length, 1);
  assert.deepEqual(got.updates[0].ids, [ID(1)]);
  conn.close();
  server.close();
});

test('plain frames: a repeated id is delivered once, pong is not a notification, and the reconnect resumes with since', async () => {
  const urls = [];
  const server = await peer((socket, url, index) => {
    urls.push(url);
    if (index === 0) {
      for (const frame of [note(1), note(2), note(1)]) socket.send(JSON.stringify(frame));
      socket.send('pong');
      socket.close(1001, 'shutting down');
    } else {
      socket.send(JSON.stringify(note(2)));
      socket.send(JSON.stringify(note(3)));
    }
  });
  const { conn, got } = client(server.url);
  await until(() => got.notifications.length === 3, 'three notifications');
  assert.deepEqual(got.notifications, [ID(1), ID(2), ID(3)]);
  assert.equal(urls[0].searchParams.get('since'), null, 'the first connect has no since');
  assert.equal(urls[1].searchParams.get('since'), ID(2), 'the reconnect resumes after the newest id');
  assert.equal(urls[1].searchParams.get('workspaceSlug'), 'acme');
  assert.equal(conn.lastId, ID(3));
  conn.close();
  server.close();
});

test('a server that accepts and drops at once is backed off more each time: open does not reset it', async () => {
  const server = await peer((socket) => socket.close(1011, 'boom'));
  const { conn, got } = client(server.url);
  await until(() => got.states.filter((s) => s.state === 'reconnecting').length === 5, 'five reconnects');
  conn.close();
  server.close();
  const retries = got.states.filter((s) => s.state === 'reconnecting');
  assert.deepEqual(retries.map((s) => s.attempt), [1, 2, 3, 4, 5]);
  retries.forEach((s, i) => {
    assert.equal(s.code, 1011);
    assert.ok(s.delay >= 0 && s.delay <= Math.min(FAST.cap, FAST.base * 2 ** i), `retry ${i}: ${s.delay}`);
  });
});

test('a connection that stayed up past stableAfter resets the backoff', async () => {
  const server = await peer((socket, url, index) => {
    if (index < 2) socket.close(1011, 'boom');
    else setTimeout(() => socket.close(1001, 'bye'), FAST.stableAfter * 3); // a wide margin: timers run late on a busy machine
  });
  const { conn, got } = client(server.url);
  await until(() => got.states.filter((s) => s.state === 'reconnecting').length === 3, 'three reconnects');
  conn.close();
  server.close();
  const attempts = got.states.filter((s) => s.state === 'reconnecting').map((s) => [s.code, s.attempt]);
  assert.deepEqual(attempts, [[1011, 1], [1011, 2], [1001, 1]]);
});

test('1013 waits at least the overload floor', async () => {
  const server = await peer((socket) => socket.close(1013, 'at capacity'));
  const { conn, got } = client(server.url);
  await until(() => got.states.some((s) => s.state === 'reconnecting'), 'a reconnect');
  conn.close();
  server.close();
  const retry = got.states.find((s) => s.state === 'reconnecting');
  assert.equal(retry.code, 1013);
  assert.ok(retry.delay >= FAST.overloadFloor && retry.delay <= FAST.cap, `delay ${retry.delay}`);
});

test('4005 stops: another device took over', async () => {
  const server = await peer((socket) => socket.close(4005, 'replaced'));
  const { conn, got } = client(server.url);
  await until(() => conn.state === 'stopped', 'the stop');
  server.close();
  const stop = got.states.at(-1);
  assert.equal(stop.code, 4005);
  assert.match(stop.advice, /another tab or device/);
  assert.equal(got.states.filter((s) => s.state === 'connecting').length, 1, 'no reconnect');
});

test('the text ping keeps a connection whose server answers, and drops one that went silent', async () => {
  const pings = [0, 0];
  const server = await peer((socket, url, index) => {
    socket.on('message', (data) => {
      pings[Math.min(index, 1)] += 1;
      if (index === 0 && String(data) === 'ping') socket.send('pong');
    });
    if (index === 0) setTimeout(() => socket.removeAllListeners('message').on('message', () => { pings[0] += 1; }), 400);
  });
  const { conn, got } = client(server.url, { heartbeat: 50 });
  await until(() => got.states.some((s) => s.state === 'reconnecting'), 'the drop of the silent connection');
  const drop = got.states.find((s) => s.state === 'reconnecting');
  const opened = got.states.find((s) => s.state === 'open');
  assert.equal(drop.reason, 'no answer to ping');
  assert.ok(drop.at - opened.at >= 400, `kept while answered: dropped after ${drop.at - opened.at} ms`);
  assert.ok(pings[0] >= 3, `pings were sent: ${pings[0]}`);
  await until(() => got.states.filter((s) => s.state === 'open').length === 2, 'the reconnect');
  conn.close();
  server.close();
});

test('a server without notifd.v1: one attempt without it at once, then plain frames for good', async () => {
  const asked = [];
  const server = await peer((socket, url, index) => {
    if (index === 1) socket.close(1001, 'restarting');
  }, { record: asked });
  const { conn, got } = client(server.url, { protocol: 'notifd.v1' });
  await until(() => got.states.filter((s) => s.state === 'open').length === 2, 'two opens');
  assert.deepEqual(asked, ['notifd.v1', null, null], 'asked once, then never again');
  const states = got.states.map((s) => s.state);
  assert.deepEqual(states.slice(0, 4), ['connecting', 'reconnecting', 'connecting', 'open'], 'the fallback');
  assert.equal(got.states[1].fallback, true);
  assert.equal(got.states[1].delay, 0);
  assert.equal(got.states.find((s) => s.state === 'open').protocol, null);
});
