// The client's reconnect policy, decision by decision (node --test; run by
// tests/client_policy.rs): every close code of the contract, the backoff bounds,
// and the README's close-code table agreeing with CLOSE_CODES.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  CLOSE_CODES, OTHER_CODE, BACKOFF, closeDecision, backoffDelay, nextStep,
} from '../../src/face/notifd.js';

const EXPECTED = {
  1000: 'retry', 1001: 'retry', 1002: 'retry', 1006: 'retry', 1007: 'retry',
  1008: 'stop', 1009: 'retry', 1011: 'retry', 1013: 'backoff',
  4000: 'retry', 4001: 'stop', 4002: 'stop', 4003: 'refresh', 4004: 'stop',
  4005: 'stop', 4006: 'retry',
};

test('every close code has the decision the contract gives it', () => {
  assert.deepEqual(Object.keys(CLOSE_CODES).sort(), Object.keys(EXPECTED).sort());
  for (const [code, action] of Object.entries(EXPECTED)) {
    assert.equal(closeDecision(Number(code)).action, action, `code ${code}`);
    assert.ok(closeDecision(Number(code)).advice.length > 10, `code ${code} says what to do`);
  }
});

test('a code the table does not name is retried', () => {
  for (const code of [1005, 1012, 1014, 3000, 4007, 4999]) {
    assert.equal(closeDecision(code), OTHER_CODE, `code ${code}`);
    assert.equal(nextStep(code, { attempt: 0, random: () => 0.5 }).action, 'retry');
  }
  assert.equal(closeDecision('constructor'), OTHER_CODE, 'no prototype keys');
});

test('terminal codes stop with no delay', () => {
  for (const code of [4001, 4002, 4004, 4005, 1008]) {
    assert.deepEqual(nextStep(code, { attempt: 3 }), { action: 'stop', delay: null }, `code ${code}`);
  }
});

test('4003 reconnects at once with a fresh token, then backs off if it repeats', () => {
  assert.deepEqual(nextStep(4003, { attempt: 0, refreshes: 0 }), { action: 'refresh', delay: 0 });
  const again = nextStep(4003, { attempt: 2, refreshes: 1, random: () => 0.999 });
  assert.equal(again.action, 'refresh');
  assert.ok(again.delay > 0 && again.delay <= 4 * BACKOFF.base, `backs off: ${again.delay}`);
});

test('full jitter: the wait is uniform below min(cap, base * 2^attempt)', () => {
  for (let attempt = 0; attempt < 40; attempt += 1) {
    const ceiling = Math.min(BACKOFF.cap, BACKOFF.base * 2 ** attempt);
    assert.equal(backoffDelay(attempt, 'retry', BACKOFF, () => 0), 0, `attempt ${attempt} low`);
    const high = backoffDelay(attempt, 'retry', BACKOFF, () => 0.999999);
    assert.ok(high <= ceiling && high > ceiling * 0.999, `attempt ${attempt} high: ${high}`);
    const mid = backoffDelay(attempt, 'retry', BACKOFF, () => 0.5);
    assert.equal(mid, ceiling / 2, `attempt ${attempt} middle`);
  }
  assert.equal(backoffDelay(1000, 'retry', BACKOFF, () => 0.999999) <= BACKOFF.cap, true, 'capped for huge attempts');
});

test('1013 waits at least the overload floor, and never past the cap', () => {
  for (let attempt = 0; attempt < 20; attempt += 1) {
    const low = nextStep(1013, { attempt, random: () => 0 }).delay;
    const high = nextStep(1013, { attempt, random: () => 0.999999 }).delay;
    assert.equal(low, BACKOFF.overloadFloor, `attempt ${attempt}`);
    assert.ok(high <= BACKOFF.cap && high >= low, `attempt ${attempt}: ${high}`);
  }
});

test('the jitter spreads clients: 1,000 draws at attempt 3 cover the range', () => {
  const draws = Array.from({ length: 1000 }, () => backoffDelay(3));
  const ceiling = BACKOFF.base * 8;
  assert.ok(Math.min(...draws) < ceiling * 0.1 && Math.max(...draws) > ceiling * 0.9);
  assert.ok(draws.every((d) => d >= 0 && d <= ceiling));
});

test("the README's close-code table says what CLOSE_CODES does", () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const section = readme.split('### What a client should do')[1] ?? '';
  assert.ok(section, 'README has the section "What a client should do"');
  for (const [code, { action }] of Object.entries(CLOSE_CODES)) {
    const row = section.split('\n').find((line) => line.startsWith(`| ${code} |`));
    assert.ok(row, `README row for ${code}`);
    assert.ok(row.includes(`**${action}**`), `README row for ${code} says **${action}**: ${row}`);
  }
});
