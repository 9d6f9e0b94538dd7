// inbox-list.js: the inbox page's list (GET /inbox-list.js, imported by inbox.js):
// which notifications it shows, each drawn from its JSON, kept in id order
// (UUIDv7: newest first), changed in place by a state change (the page's own
// actions, or notifd.v1 `updated` events from other tabs and devices) and dropped
// when a change takes it out of the view. inbox.js decides what to load and when;
// this module only keeps the DOM in line with what it was given.

const $ = (id) => document.getElementById(id);

/** What inbox.js tells the list: the server's optional features, the view (all,
 *  unread, archived), and whether a page is loading. */
export const options = { features: {}, view: 'all', loading: false };

/** id -> { n: notification, el: <li> }, for what the list shows now. */
export const shown = new Map();

/** Empties the list. */
export function clear() {
  shown.clear();
  $('list').replaceChildren();
}

/** The newest and the oldest id shown (null when none). */
export function newest() { return [...shown.keys()].sort().pop() ?? null; }
export function oldest() { return [...shown.keys()].sort()[0] ?? null; }

/** A notifd.v1 `updated` event: by ids, or by filter up to `through`. */
export function applyUpdate(event) {
  const changes = event.changes ?? {};
  const matches = event.ids
    ? (id) => event.ids.includes(id)
    : (id, n) => id <= event.through
      && (!event.filter?.workspace || n.workspace === null || n.workspace === event.filter.workspace)
      && (!event.filter?.kind || n.kind === event.filter.kind);
  for (const [id, { n }] of [...shown]) {
    if (matches(id, n)) change(id, changes);
  }
}

/** Puts `n` in the list in id order (UUIDv7: newest first). */
export function place(n, fresh) {
  const el = $('item-template').content.firstElementChild.cloneNode(true);
  el.dataset.id = n.id;
  el.classList.toggle('fresh', fresh);
  shown.set(n.id, { n, el });
  draw(n, el);
  const after = [...$('list').children].find((other) => other.dataset.id < n.id);
  $('list').insertBefore(el, after ?? null);
}

function draw(n, el) {
  const read = n.read_at != null;
  el.classList.toggle('unread', !read);
  el.dataset.type = n.type ?? 'info';
  el.querySelector('.title').textContent = n.title || n.kind;
  el.querySelector('.kind').textContent = n.kind;
  el.querySelector('.message').textContent = n.message ?? '';
  const time = el.querySelector('.time');
  time.dateTime = n.created_at;
  time.title = new Date(n.created_at).toLocaleString();
  time.textContent = ago(n.created_at);
  const toggleRead = el.querySelector('.toggle-read');
  toggleRead.textContent = read ? 'Mark unread' : 'Mark read';
  toggleRead.hidden = read && !options.features.unread;
  toggleRead.setAttribute('aria-label', `${toggleRead.textContent}: ${n.title || n.kind}`);
  const archive = el.querySelector('.toggle-archive');
  archive.hidden = !options.features.archive;
  archive.textContent = n.archived_at ? 'Unarchive' : 'Archive';
  el.setAttribute('aria-label', `${read ? '' : 'Unread. '}${n.title || n.kind}. ${n.message ?? ''}`);
}

/** Applies state `changes` to a shown notification; drops it when it leaves the view. */
export function change(id, changes) {
  const entry = shown.get(id);
  if (!entry) return;
  // A set value lands only where the field is still null (the server keeps the
  // first read_at, seen_at, archived_at); null, an undo, always lands.
  for (const [field, value] of Object.entries(changes)) {
    if (value === null || entry.n[field] == null) entry.n[field] = value;
  }
  entry.n.read = entry.n.read_at != null;
  entry.n.seen = entry.n.seen_at != null;
  const archivedView = options.view === 'archived';
  if ('archived_at' in changes && (entry.n.archived_at != null) !== archivedView) {
    entry.el.remove();
    shown.delete(id);
    updateEmpty();
    return;
  }
  draw(entry.n, entry.el);
}

export function updateEmpty() {
  $('empty').hidden = shown.size > 0 || options.loading;
}

function ago(iso) {
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 45) return 'just now';
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
}

// Relative times ("5 min ago") move on while the page stays open.
setInterval(() => { for (const { n, el } of shown.values()) el.querySelector('.time').textContent = ago(n.created_at); }, 30000);
