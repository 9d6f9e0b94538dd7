// inbox.js: the inbox page (GET /), built on notifd.js. It signs in with a token
// (kept in this tab's sessionStorage), lists the user's notifications through the
// REST API on this origin, keeps a WebSocket to the notifd WebSocket port for live
// arrivals (and, with the notifd.v1 protocol, the state changes and counts other
// tabs and devices make), and turns clicks and keys into REST calls; inbox-list.js
// keeps the list itself. What the
// server supports beyond the basics (unread, seen, archive) is read from its own
// /v1/openapi.json, so the page never offers a button the server would 404.
import { connect, api, wsUrl, NotifdError } from '/notifd.js';
import * as list from '/inbox-list.js';

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 20;
const KEYS = { token: 'notifd.token', workspace: 'notifd.workspace', ws: 'notifd.ws' };

const session = {
  token: null, workspace: null, rest: null, live: null,
  view: 'all', cursor: null, loading: false, features: {},
};

// ---- signing in and out ----

function restore() {
  const query = new URLSearchParams(location.search);
  $('token').value = sessionStorage.getItem(KEYS.token) ?? '';
  $('workspace').value = query.get('workspace') ?? sessionStorage.getItem(KEYS.workspace) ?? '';
  $('ws').value = query.get('ws') ?? sessionStorage.getItem(KEYS.ws) ?? '';
  if ($('token').value.trim() && $('workspace').value.trim()) signIn();
}

async function signIn(event) {
  event?.preventDefault();
  const token = $('token').value.trim();
  const workspace = $('workspace').value.trim();
  if (!token || !workspace) return showError('signin-error', 'Enter a token and a workspace.');
  if (!socketUrl()) return showError('signin-error', 'WebSocket: give a port (1 to 65535) or a ws:// or wss:// URL.');
  showError('signin-error', null);
  $('signin-button').disabled = true;
  const rest = api({ getToken: () => session.token });
  Object.assign(session, { token, workspace, rest, opened: false });
  try {
    setBadge((await rest.counts({ workspace })).unread);
  } catch (err) {
    $('signin-button').disabled = false;
    return showError('signin-error', explain(err));
  }
  sessionStorage.setItem(KEYS.token, token);
  sessionStorage.setItem(KEYS.workspace, workspace);
  sessionStorage.setItem(KEYS.ws, $('ws').value.trim());
  $('signin-button').disabled = false;
  showInbox(true);
  await detectFeatures();
  await reload();
  startLive();
  return undefined;
}

function signOut(message) {
  session.live?.close();
  session.live = null;
  sessionStorage.removeItem(KEYS.token);
  $('token').value = '';
  clearList();
  showInbox(false);
  setStatus('signed-out', 'Signed out');
  showError('signin-error', message ?? null);
  $('token').focus();
}

function showInbox(on) {
  $('signin').hidden = on;
  $('inbox').hidden = !on;
  $('bell').hidden = !on;
  $('sign-out').hidden = !on;
  $('workspace-label').hidden = !on;
  $('workspace-label').textContent = session.workspace ?? '';
}

/** A REST failure in words a person can act on. */
function explain(err) {
  if (!(err instanceof NotifdError)) return `Something went wrong: ${err.message}`;
  if (err.code === 'token_expired') return 'This token has expired. Paste a fresh one.';
  if (err.status === 401) return `The server refused this token: ${err.message}.`;
  if (err.code === 'workspace_forbidden') return `This token does not grant the workspace “${session.workspace}”.`;
  if (err.status === 0) return 'notifd could not be reached. Check your connection; the page retries live updates by itself.';
  if (err.status === 503) return 'notifd is temporarily unavailable (its database or Redis). Try again in a few seconds.';
  return `The server answered ${err.status} (${err.code}): ${err.message}`;
}

/** Which optional routes this server has, from its OpenAPI document. */
async function detectFeatures() {
  let paths = {};
  try { paths = (await (await fetch('/v1/openapi.json')).json()).paths ?? {}; } catch { paths = {}; }
  session.features = {
    unread: '/v1/notifications/unread' in paths,
    seen: '/v1/notifications/seen-all' in paths,
    archive: '/v1/notifications/archive' in paths,
  };
  list.options.features = session.features;
  document.querySelector('.tab[data-view="archived"]').hidden = !session.features.archive;
}

// ---- the live connection ----

/** The WebSocket URL: a whole ws(s):// URL as given, else this host on that port
 *  (8081 when empty); null when the setting is neither. */
function socketUrl() {
  const setting = $('ws').value.trim();
  if (/^wss?:\/\/[^/]/.test(setting)) return setting;
  const port = setting === '' ? 8081 : Number(setting);
  return Number.isInteger(port) && port > 0 && port < 65536 ? wsUrl({ port }) : null;
}

function startLive() {
  session.live = connect({
    url: socketUrl(),
    getToken: () => session.token,
    workspace: session.workspace,
    onNotification: arrived,
    onUpdate: list.applyUpdate,
    onCounts: (counts) => setBadge(counts.unread),
    onState: liveState,
  });
  const newest = list.newest();
  if (newest) session.live.advance(newest);
}

/** What the status says after a terminal close, short enough for the bar. */
const STOPPED = {
  4002: 'No workspace given',
  4004: 'The token does not grant this workspace',
  4005: 'Another tab or device took over',
  1008: 'The resume point was refused',
};

function liveState(state, detail) {
  if (state === 'open') {
    setStatus('open', detail.protocol ? `Live · ${detail.protocol}` : 'Live');
    // No id to resume from (nothing listed or received): list again now that live
    // delivery runs, so nothing created in between is missed.
    if (!session.live.lastId) reload();
    else if (session.opened) refreshShown();
    session.opened = true;
    if (!detail.protocol) refreshCounts();
  } else if (state === 'connecting') {
    setStatus('connecting', 'Connecting…');
  } else if (state === 'reconnecting') {
    if (detail.code === 4003) return signOut('Your token expired. Paste a fresh one to continue.');
    if (detail.fallback) return setStatus('connecting', 'Connecting…');
    const seconds = Math.max(1, Math.ceil(detail.delay / 1000));
    setStatus('reconnecting', `Reconnecting in ${seconds} s${detail.code === 1001 ? ' (server restarting)' : ''}`);
  } else if (state === 'stopped') {
    if (detail.code === 4001) return signOut(`The WebSocket refused this token (4001): ${detail.reason || detail.meaning}.`);
    const why = STOPPED[detail.code] ?? detail.meaning;
    setStatus('stopped', `${why}${detail.code ? ` (${detail.code})` : ''}`);
    $('reconnect').hidden = false;
  }
  return undefined;
}

/** After a reconnect: `since` replays what was created meanwhile, but not what
 *  other devices changed; read the shown ones' state again and apply it. */
async function refreshShown() {
  const params = { limit: Math.min(100, Math.max(PAGE_SIZE, list.shown.size)), workspace: session.workspace };
  if (session.features.archive) params.archived = 'any';
  try {
    const page = await session.rest.list(params);
    for (const n of page.notifications) {
      list.change(n.id, { read_at: n.read_at, seen_at: n.seen_at ?? null, archived_at: n.archived_at ?? null });
    }
  } catch { /* the next action shows any error */ }
}

function arrived(n) {
  refreshCounts();
  // A replay after a reconnect may bring read or archived ones: each view keeps its own.
  if (list.shown.has(n.id) || session.view === 'archived' || n.archived_at) return;
  if (session.view === 'unread' && n.read_at) return;
  const oldest = list.oldest();
  if (session.cursor && oldest && n.id < oldest) return; // "Load more" brings it
  list.place(n, true);
  list.updateEmpty();
}

// ---- the list ----

function clearList() {
  list.clear();
  session.cursor = null;
  $('more').hidden = true;
  $('empty').hidden = true;
}

async function reload() {
  clearList();
  await loadPage();
}

async function loadPage() {
  if (session.loading) return;
  session.loading = true;
  list.options.loading = true;
  $('more').disabled = true;
  const params = { limit: PAGE_SIZE, workspace: session.workspace, cursor: session.cursor };
  if (session.view === 'unread') params.unread = true;
  if (session.view === 'archived') params.archived = 'true';
  try {
    const page = await session.rest.list(params);
    showError('inbox-error', null);
    for (const n of page.notifications) if (!list.shown.has(n.id)) list.place(n, false);
    session.cursor = page.cursor;
    if (page.notifications.length) session.live?.advance(page.notifications[0].id);
  } catch (err) {
    if (err.status === 401) signOut(explain(err)); else showError('inbox-error', explain(err));
  } finally {
    session.loading = false;
    list.options.loading = false;
    $('more').disabled = false;
    $('more').hidden = !session.cursor;
    list.updateEmpty();
  }
}

// ---- actions ----

async function act(call, onDone) {
  try {
    await call();
    showError('inbox-error', null);
    onDone?.();
  } catch (err) {
    if (err.status === 401) signOut(explain(err)); else showError('inbox-error', explain(err));
  }
  refreshCounts();
}

function toggleRead(id) {
  const entry = list.shown.get(id);
  if (!entry) return undefined;
  const now = new Date().toISOString();
  if (entry.n.read_at == null) return act(() => session.rest.markRead([id]), () => list.change(id, { read_at: now }));
  if (!session.features.unread) return undefined;
  return act(() => session.rest.markUnread([id]), () => list.change(id, { read_at: null }));
}

function toggleArchive(id) {
  const entry = list.shown.get(id);
  if (!entry || !session.features.archive) return undefined;
  const now = new Date().toISOString();
  if (entry.n.archived_at) return act(() => session.rest.unarchive([id]), () => list.change(id, { archived_at: null }));
  return act(() => session.rest.archive([id]), () => list.change(id, { archived_at: now }));
}

function readAll() {
  const now = new Date().toISOString();
  return act(() => session.rest.readAll({ workspace: session.workspace }), () => {
    for (const [id, { n }] of list.shown) if (n.read_at == null) list.change(id, { read_at: now });
  });
}

function setView(view) {
  session.view = view;
  list.options.view = view;
  for (const tab of document.querySelectorAll('.tab')) tab.setAttribute('aria-pressed', String(tab.dataset.view === view));
  reload();
}

let countsTimer = null;
/** The exact counts from the server, at most every 150 ms however many changes come.
 *  Not on notifd.v1: there the server sends `counts` after every change itself. */
function refreshCounts() {
  if (session.live?.protocol === 'notifd.v1') return;
  clearTimeout(countsTimer);
  countsTimer = setTimeout(async () => {
    try { setBadge((await session.rest.counts({ workspace: session.workspace })).unread); } catch { /* shown on the next action */ }
  }, 150);
}

function setBadge(unread) {
  const badge = $('badge');
  badge.hidden = !unread;
  badge.textContent = unread > 99 ? '99+' : String(unread);
  $('bell').setAttribute('aria-label', `Unread notifications: ${unread}`);
  document.title = unread ? `(${unread}) Inbox · notifd` : 'Inbox · notifd';
}

function setStatus(state, text) {
  if (state !== 'stopped') $('reconnect').hidden = true;
  $('status').dataset.state = state;
  $('status-text').textContent = text;
}

function showError(id, message) {
  $(id).hidden = !message;
  $(id).textContent = message ?? '';
}

// ---- wiring: clicks and keys ----

function onListClick(event) {
  const item = event.target.closest('.item');
  if (!item) return;
  if (event.target.closest('.toggle-read')) toggleRead(item.dataset.id);
  else if (event.target.closest('.toggle-archive')) toggleArchive(item.dataset.id);
  else item.focus();
}

function onKey(event) {
  if (event.target.closest('input, textarea') || event.ctrlKey || event.metaKey || event.altKey || $('inbox').hidden) return;
  const items = [...$('list').children];
  const current = document.activeElement?.closest?.('.item');
  const index = items.indexOf(current);
  if (event.key === 'j' || event.key === 'k') {
    const next = items[Math.min(items.length - 1, Math.max(0, index + (event.key === 'j' ? 1 : -1)))];
    next?.focus();
  } else if (event.key === 'r' && current) {
    toggleRead(current.dataset.id);
  } else if (event.key === 'e' && current) {
    toggleArchive(current.dataset.id);
  } else {
    return;
  }
  event.preventDefault();
}

function onBell() {
  setView('unread');
  if (session.features.seen) act(() => session.rest.seenAll({ workspace: session.workspace }));
}

$('signin-form').addEventListener('submit', signIn);
$('sign-out').addEventListener('click', () => signOut());
$('list').addEventListener('click', onListClick);
$('more').addEventListener('click', () => loadPage());
$('read-all').addEventListener('click', readAll);
$('bell').addEventListener('click', onBell);
$('reconnect').addEventListener('click', () => session.live?.reconnect());
for (const tab of document.querySelectorAll('.tab')) tab.addEventListener('click', () => setView(tab.dataset.view));
document.addEventListener('keydown', onKey);
restore();
