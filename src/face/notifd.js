// notifd.js: the browser client of notifd, one ES module with no dependencies,
// served by notifd itself at GET /notifd.js (hand-written; no bundler, no build).
//
//   import { connect, api, wsUrl } from '/notifd.js';
//   const getToken = async () => (await fetch('/my-app/token')).text();
//   const inbox = api({ getToken });
//   const { notifications, cursor } = await inbox.list({ limit: 20 });
//   const live = connect({ url: wsUrl({ port: 8081 }), getToken, workspace: 'acme',
//     onNotification: (n) => show(n), onState: (state, detail) => status(state, detail) });
//
// `connect` resumes with `since` (the newest id it has seen) after every drop,
// reconnects by close code (CLOSE_CODES, the README's table), drops duplicates by
// id, and speaks the `notifd.v1` event protocol when the server selects it (plain
// frames otherwise). `api` wraps the REST routes with Bearer auth. What comes before
// it: the server's WebSocket (port 8081 by default) and REST API (the page's own
// origin). What comes after: your UI, through the callbacks.

/** The event protocol's subprotocol name (contract §3.1). */
export const PROTOCOL = 'notifd.v1';

/**
 * What a client does after each close code: `stop` (do not reconnect: the same
 * request would be refused again), `refresh` (ask `getToken` for a new token, then
 * reconnect), `backoff` (reconnect after a longer wait) or `retry` (reconnect with
 * capped, jittered backoff, resuming with `since`: nothing is lost).
 */
export const CLOSE_CODES = Object.freeze({
  1000: { action: 'retry', meaning: 'normal closure', advice: 'Reconnect with backoff and since.' },
  1001: { action: 'retry', meaning: 'the server is shutting down', advice: 'Reconnect with backoff and since: the restarted (or another) instance resumes where this one stopped.' },
  1002: { action: 'retry', meaning: 'a client frame broke RFC 6455', advice: 'Reconnect with backoff; fix the client if it repeats.' },
  1006: { action: 'retry', meaning: 'the connection dropped without a close frame (network)', advice: 'Reconnect with backoff and since.' },
  1007: { action: 'retry', meaning: 'a client text frame that is not UTF-8', advice: 'Reconnect with backoff; fix the client if it repeats.' },
  1008: { action: 'stop', meaning: '`since` is not a notification id', advice: 'Stop: the same request is refused again. Fix the since value.' },
  1009: { action: 'retry', meaning: 'a client message over 64 KiB', advice: 'Reconnect; send only small frames (the text ping).' },
  1011: { action: 'retry', meaning: 'history could not be read for the since replay', advice: 'Reconnect with backoff and the same since.' },
  1013: { action: 'backoff', meaning: 'the instance is at its connection limit', advice: 'Reconnect after a longer backoff (at least 5 s): the load balancer may pick another instance.' },
  4000: { action: 'retry', meaning: 'idle: no frame from the client for the idle timeout', advice: 'Reconnect; send a frame (the text ping) more often than the idle timeout.' },
  4001: { action: 'stop', meaning: 'token missing, malformed, bad signature, wrong algorithm or no sub', advice: 'Stop and sign in again: retrying the same token cannot succeed.' },
  4002: { action: 'stop', meaning: 'workspaceSlug missing or empty', advice: 'Stop: fix the workspace.' },
  4003: { action: 'refresh', meaning: 'the token expired (at connect, or while connected)', advice: 'Ask the app for a fresh token (getToken), then reconnect at once.' },
  4004: { action: 'stop', meaning: 'the token does not grant this workspace', advice: 'Stop: pick a workspace the token grants, or get a token that grants it.' },
  4005: { action: 'stop', meaning: 'replaced: a newer connection of the same user and workspace opened', advice: 'Stop: another tab or device took over. Reconnect only on a user action.' },
  4006: { action: 'retry', meaning: 'too slow: the client did not read and its queue filled', advice: 'Reconnect with backoff and since: nothing is lost.' },
});

/** The decision for a code the table does not name. */
export const OTHER_CODE = Object.freeze({ action: 'retry', meaning: 'any other code', advice: 'Reconnect with backoff and since.' });

/** What to do after the close `code`. */
export function closeDecision(code) {
  return Object.hasOwn(CLOSE_CODES, code) ? CLOSE_CODES[code] : OTHER_CODE;
}

/**
 * Backoff settings, in milliseconds. `base * 2^attempt` grows to `cap`; the wait
 * is drawn uniformly below it (full jitter, so a restarted server is not hit by
 * every client at once); 1013 waits at least `overloadFloor` more. `stableAfter`:
 * only a connection that stayed up this long resets the attempt count, so a
 * server that accepts and then drops at once is not hammered.
 */
export const BACKOFF = Object.freeze({ base: 1000, cap: 30000, overloadFloor: 5000, stableAfter: 10000 });

/** The wait before reconnect number `attempt` (0 = the first), for `action`. */
export function backoffDelay(attempt, action = 'retry', settings = BACKOFF, random = Math.random) {
  const ceiling = Math.min(settings.cap, settings.base * 2 ** Math.max(0, attempt));
  const jittered = random() * ceiling;
  return action === 'backoff' ? Math.min(settings.cap, settings.overloadFloor + jittered) : jittered;
}

/**
 * The whole reconnect policy as one pure function: after close `code`, with
 * `attempt` reconnects since the last stable connection and `refreshes` 4003s in a
 * row, either `{ action: 'stop' }` or `{ action, delay }` in milliseconds. The first
 * 4003 reconnects at once with a fresh token; a second one in a row backs off (the
 * app keeps handing out expired tokens).
 */
export function nextStep(code, { attempt = 0, refreshes = 0, settings = BACKOFF, random = Math.random } = {}) {
  const { action } = closeDecision(code);
  if (action === 'stop') return { action, delay: null };
  if (action === 'refresh' && refreshes === 0) return { action, delay: 0 };
  return { action, delay: backoffDelay(attempt, action, settings, random) };
}

/** The WebSocket URL for the page's own host on another port (8081 by default). */
export function wsUrl({ port = 8081, path = '/', location = globalThis.location } = {}) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.hostname}:${port}${path}`;
}

/** The ids seen lately, bounded: enough to drop the duplicates a reconnect can bring. */
class RecentIds {
  constructor(limit) { this.limit = limit; this.ids = new Set(); }
  /** False when `id` was seen already; else remembers it. */
  add(id) {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.limit) this.ids.delete(this.ids.values().next().value);
    return true;
  }
}

/** UUIDv7 ids sort as text in time order: the newer of two (null = none). */
function newer(a, b) {
  if (!a) return b ?? null;
  if (!b) return a;
  return b.toLowerCase() > a.toLowerCase() ? b : a;
}

/** Heartbeat rounds without a single frame from the server after which the
 *  connection counts as dead (a pong answers every ping: two missed, and some). */
const DEAD_AFTER_ROUNDS = 2.2;

const DEFAULTS = Object.freeze({
  protocol: PROTOCOL, since: null, heartbeat: 25000, dedupe: 2000, backoff: BACKOFF,
});

/**
 * Connects to notifd's WebSocket and keeps connected. Options: `url` (ws:// or
 * wss://, e.g. from `wsUrl()`), `getToken` (returns a token or a promise of one;
 * called for every connect), `workspace`, callbacks `onNotification(n)`,
 * `onUpdate(change)`, `onCounts({unread, unseen})`, `onSynced(through)`,
 * `onState(state, detail)` with state `connecting`, `open`, `reconnecting`,
 * `stopped` (a terminal close code: detail has code, reason, meaning, advice) or
 * `closed` (by `close()`); and `protocol` (`'notifd.v1'`, or null for plain
 * frames), `since` (resume after this id), `heartbeat` (ms between text pings),
 * `WebSocket` (a constructor, e.g. the `ws` package's under Node).
 */
export function connect(options) {
  const o = { ...DEFAULTS, ...options };
  if (!o.url || typeof o.getToken !== 'function') throw new TypeError('connect: url and getToken are required');
  return Connection.open(o);
}

/** One logical connection, across every reconnect (what `connect` returns). */
class Connection {
  #o; #Socket; #seen; #ws = null; #state = 'idle'; #lastId; #attempt = 0; #refreshes = 0;
  #ended = false; #retryTimer = null; #stableTimer = null; #pingTimer = null; #lastFrameAt = 0;
  // `fallback`: this attempt goes without the subprotocol after one that asked for
  // it never opened; `plainOnly`: such an attempt opened, so the server has none.
  #fallback = false; #plainOnly = false;

  /** A connection that starts connecting at once. */
  static open(o) {
    const connection = new Connection(o);
    connection.#start();
    return connection;
  }

  constructor(o) {
    this.#o = o;
    this.#Socket = o.WebSocket ?? globalThis.WebSocket;
    this.#seen = new RecentIds(o.dedupe);
    this.#lastId = o.since ?? null;
  }

  /** Closes for good (1000); no reconnect. */
  close() {
    this.#ended = true;
    clearTimeout(this.#retryTimer);
    this.#clearTimers();
    const socket = this.#ws;
    this.#ws = null;
    if (socket) socket.close(1000, 'closed by the app');
    this.#setState('closed');
  }

  /** After a stop (say 4005), connect again: a user asked for it. */
  reconnect() {
    if (this.#ws || this.#retryTimer) return;
    this.#ended = false;
    this.#attempt = 0;
    this.#refreshes = 0;
    this.#start();
  }

  /** Resume after `id` too (e.g. the newest id of a page the app listed). */
  advance(id) { this.#lastId = newer(this.#lastId, id); }

  get lastId() { return this.#lastId; }
  get state() { return this.#state; }
  get protocol() { return this.#ws ? this.#ws.protocol || null : null; }

  async #start() {
    this.#retryTimer = null;
    this.#setState('connecting', { attempt: this.#attempt });
    let token;
    try {
      token = await this.#o.getToken();
    } catch (error) {
      this.#schedule({ action: 'retry', delay: backoffDelay(this.#attempt, 'retry', this.#o.backoff) }, { error });
      return;
    }
    if (!this.#ended) this.#open(token);
  }

  #open(token) {
    const asked = this.#o.protocol && !this.#plainOnly && !this.#fallback ? [this.#o.protocol] : [];
    let socket;
    try {
      socket = new this.#Socket(this.#url(token), asked);
    } catch (error) {
      this.#ended = true; // a malformed URL stays malformed: retrying cannot help
      this.#setState('stopped', { code: null, reason: error.message, meaning: 'the WebSocket URL is not valid', advice: 'Stop: fix the url option.' });
      return;
    }
    socket.askedProtocol = asked.length > 0;
    this.#ws = socket;
    socket.onopen = () => { socket.wasOpen = true; this.#opened(socket); };
    socket.onmessage = (event) => this.#onFrame(socket, event.data);
    socket.onclose = (event) => this.#closed(socket, event.code, event.reason);
    socket.onerror = () => {}; // a close event follows and decides
  }

  #url(token) {
    const target = new URL(this.#o.url);
    target.searchParams.set('token', token);
    target.searchParams.set('workspaceSlug', this.#o.workspace ?? '');
    if (this.#lastId) target.searchParams.set('since', this.#lastId);
    return target.toString();
  }

  #opened(socket) {
    if (this.#fallback) { this.#plainOnly = true; this.#fallback = false; }
    this.#lastFrameAt = Date.now();
    this.#setState('open', { protocol: socket.protocol || null, since: this.#lastId });
    this.#stableTimer = setTimeout(() => { this.#attempt = 0; this.#refreshes = 0; }, this.#o.backoff.stableAfter);
    // Browsers cannot send ping frames: the text ping keeps the connection active
    // and proves the server still answers; silence for two rounds means it is gone.
    this.#pingTimer = setInterval(() => {
      if (Date.now() - this.#lastFrameAt > DEAD_AFTER_ROUNDS * this.#o.heartbeat) {
        this.#dropDead(socket);
        return;
      }
      try { socket.send('ping'); } catch { /* closing already */ }
    }, this.#o.heartbeat);
  }

  #dropDead(socket) {
    this.#ws = null;
    this.#clearTimers();
    try { socket.close(4000, 'no answer to ping'); } catch { /* gone already */ }
    this.#schedule(nextStep(1006, { attempt: this.#attempt, settings: this.#o.backoff }), { code: 1006, reason: 'no answer to ping' });
  }

  #closed(socket, code, reason) {
    if (socket !== this.#ws) return;
    this.#ws = null;
    this.#clearTimers();
    if (this.#ended) return;
    // A server without the event protocol fails a handshake that asks for it
    // (browsers refuse an upgrade that selects no requested subprotocol): try once
    // at once without it; if that opens, stay on plain frames from then on.
    if (socket.askedProtocol && !socket.wasOpen && !this.#fallback) {
      this.#fallback = true;
      this.#schedule({ action: 'retry', delay: 0 }, { code, reason, meaning: 'retrying without the event protocol', fallback: true });
      return;
    }
    this.#fallback = false;
    const step = nextStep(code, { attempt: this.#attempt, refreshes: this.#refreshes, settings: this.#o.backoff });
    const { meaning, advice } = closeDecision(code);
    this.#refreshes = step.action === 'refresh' ? this.#refreshes + 1 : 0;
    if (step.action === 'stop') {
      this.#ended = true;
      this.#setState('stopped', { code, reason, meaning, advice });
      return;
    }
    this.#schedule(step, { code, reason, meaning });
  }

  #schedule(step, detail) {
    this.#attempt += 1;
    this.#setState('reconnecting', { ...detail, delay: step.delay, attempt: this.#attempt });
    this.#retryTimer = setTimeout(() => this.#start(), step.delay);
  }

  #onFrame(socket, data) {
    this.#lastFrameAt = Date.now();
    if (typeof data !== 'string' || data === 'pong') return;
    let value;
    try { value = JSON.parse(data); } catch { return; }
    if (socket.protocol === PROTOCOL) this.#onEvent(value); else this.#deliver(value);
  }

  #onEvent(event) {
    const o = this.#o;
    switch (event?.event) {
      case 'notification': this.#deliver(event.notification); break;
      case 'synced': this.#lastId = newer(this.#lastId, event.through); o.onSynced?.(event.through ?? null); break;
      case 'updated': o.onUpdate?.(event); break;
      case 'counts': o.onCounts?.({ unread: event.unread, unseen: event.unseen }); break;
      default: break; // an event this client does not know: ignored
    }
  }

  #deliver(n) {
    if (!n || typeof n.id !== 'string' || !this.#seen.add(n.id)) return;
    this.#lastId = newer(this.#lastId, n.id);
    this.#o.onNotification?.(n);
  }

  #setState(next, detail = {}) { this.#state = next; this.#o.onState?.(next, detail); }

  #clearTimers() {
    clearTimeout(this.#stableTimer);
    clearInterval(this.#pingTimer);
    this.#stableTimer = null;
    this.#pingTimer = null;
  }
}

/** A failed REST call: `status` (0 when notifd could not be reached), `code`, `message`. */
export class NotifdError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'NotifdError';
    this.status = status;
    this.code = code;
  }
}

/**
 * The REST helpers, each with `Authorization: Bearer <getToken()>`. `baseUrl`
 * defaults to the page's own origin (the REST port). Each returns the parsed JSON
 * body or throws a `NotifdError`.
 */
export function api({ baseUrl = '', getToken, fetch: fetcher = globalThis.fetch.bind(globalThis) }) {
  async function call(method, path, { query, body } = {}) {
    const token = await getToken();
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null && value !== '') params.set(name, String(value));
    }
    const search = params.toString();
    const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetcher(`${baseUrl}${path}${search ? `?${search}` : ''}`, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new NotifdError(0, 'unreachable', `notifd could not be reached: ${error.message}`);
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!response.ok) {
      throw new NotifdError(response.status, data?.error?.code ?? 'http_error', data?.error?.message ?? `HTTP ${response.status}`);
    }
    return data;
  }
  const ids = (path) => (list) => call('PATCH', `/v1/notifications/${path}`, { body: { ids: list } });
  const bulk = (path) => (filter = {}) => call('POST', `/v1/notifications/${path}`, { body: filter });
  return {
    /** One page: `{notifications, cursor}`; params limit, cursor, kind, unread, workspace, archived. */
    list: (params = {}) => call('GET', '/v1/notifications', { query: params }),
    markRead: ids('read'),
    markUnread: ids('unread'),
    markSeen: ids('seen'),
    archive: ids('archive'),
    unarchive: ids('unarchive'),
    /** Every visible unread one (optionally `{workspace, kind}`): `{updated}`. */
    readAll: bulk('read-all'),
    seenAll: bulk('seen-all'),
    archiveAll: bulk('archive-all'),
    /** `{unread}` (and `unseen` where the server counts it); optional `{workspace}`. */
    counts: (params = {}) => call('GET', '/v1/notifications/unread-count', { query: params }),
  };
}
