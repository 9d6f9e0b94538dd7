// What the page scenarios share (inbox.mjs): Debian's chromium through
// playwright-core (never a browser download), a fresh user-data dir per run, pages
// that record console errors and Content-Security-Policy violations, signing in,
// creating notifications through the REST API, and waits with deadlines.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

// Generous: the machine running the suite may be busy with other test binaries.
export const DEADLINE_MS = 30000;

export function env(name) {
  const value = process.env[name];
  assert.ok(value, `${name} is set (tests/browser.rs sets it)`);
  return value;
}

/** A headless chromium with a fresh profile; `close()` removes the profile too. */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'notifd-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
    colorScheme: 'light',
    viewport: { width: 1000, height: 780 },
  });
  context.setDefaultTimeout(DEADLINE_MS);
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Runs `scenario(browser)` in a fresh browser, closed however the scenario ends. */
export async function withBrowser(scenario) {
  const browser = await launch();
  try {
    return await scenario(browser);
  } finally {
    await browser.close();
  }
}

/** A new tab whose console errors and CSP violations land in `page.problems`. */
export async function newPage(browser) {
  const page = await browser.context.newPage();
  page.problems = [];
  page.on('console', (message) => {
    // A refused WebSocket or a stopped server is logged by the browser itself as
    // a network error; those are what the scenarios provoke on purpose.
    if (message.type() === 'error' && !/WebSocket|ERR_CONNECTION_REFUSED|status of 40[13]/.test(message.text())) {
      page.problems.push(message.text());
    }
  });
  page.on('pageerror', (error) => page.problems.push(`page error: ${error.message}`));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      console.error(`CSP violation: ${event.violatedDirective} ${event.blockedURI}`);
    });
  });
  return page;
}

/** Opens the page and submits the sign-in form. */
export async function signIn(page, { token, workspace = env('NOTIFD_WORKSPACE') }) {
  if (!page.url().startsWith(env('NOTIFD_HTTP'))) {
    await page.goto(`${env('NOTIFD_HTTP')}/?ws=${env('NOTIFD_WS_PORT')}`);
  }
  await page.fill('#token', token);
  await page.fill('#workspace', workspace);
  await page.click('#signin-button');
}

/** Waits until the connection indicator says `state` (open, reconnecting, …). */
export async function waitForStatus(page, state) {
  try {
    await page.waitForSelector(`#status[data-state="${state}"]`, { state: 'attached' });
  } catch (error) {
    const now = await page.$eval('#status', (el) => `${el.dataset.state}: ${el.textContent.trim()}`);
    const errors = await page.$$eval('.error:not([hidden])', (els) => els.map((el) => el.textContent));
    throw new Error(`status never ${state}; it is ${now}; errors shown ${JSON.stringify(errors)}; problems ${JSON.stringify(page.problems)}`);
  }
}

/** The badge as a number (0 when hidden). */
export async function badge(page) {
  return page.$eval('#badge', (el) => (el.hidden ? 0 : Number(el.textContent)));
}

export async function waitForBadge(page, unread) {
  await page.waitForFunction(
    (n) => { const el = document.getElementById('badge'); return (el.hidden ? 0 : Number(el.textContent)) === n; },
    unread,
  );
}

/** The ids the list shows, top to bottom. */
export function listed(page) {
  return page.$$eval('#list .item', (items) => items.map((item) => item.dataset.id));
}

/** Creates a notification for NOTIFD_USER through `base` (the REST URL of an instance). */
export async function create(fields, base = env('NOTIFD_HTTP')) {
  const response = await fetch(`${base}/v1/internal/notifications`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${env('NOTIFD_SERVICE_TOKEN')}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ user_id: env('NOTIFD_USER'), workspace: env('NOTIFD_WORKSPACE'), payload: {}, ...fields }),
  });
  assert.equal(response.status, 201, await response.clone().text());
  return response.json();
}

/** Lines from the Rust test on stdin: `await next()` is the next one. */
export function commands() {
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  return async () => (await lines.next()).value;
}

export function assertNoProblems(page) {
  assert.deepEqual(page.problems, [], 'no console errors, page errors or CSP violations');
}
