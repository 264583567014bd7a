import { describe, expect, it } from 'vitest';
import {
  checkSignIn,
  deliveryNotice,
  errorText,
  formatDuration,
  initialState,
  isMine,
  languageLabel,
  ownerText,
  permissions,
  priorityLabel,
  reasonLabel,
  replyHint,
  selectedCase,
  senderLabel,
  visibleCases,
  waitingText,
  withCase,
  canSend,
  canUpload,
  dashboardDays,
  formatMs,
  perDaySeries,
  signInErrorText,
  tabsFor,
} from './state';
import type { Dashboard } from './api';
import { consoleStrings as s } from './strings';
import { aCase, aMessage } from './testUtil';

const ME = 'Dana R., RN';
const T0 = Date.parse('2025-01-01T10:00:00Z');
const MIN = 60_000;

describe('permissions', () => {
  const open = aCase({ status: 'open' });
  const mine = aCase({ status: 'claimed', claimed_by: ME });
  const theirs = aCase({ status: 'claimed', claimed_by: 'Sam K., MD' });
  const handedBack = aCase({ status: 'handed_back', claimed_by: ME });
  const resolved = aCase({ status: 'resolved', claimed_by: ME });

  it.each([
    ['open', open, { claim: true, handback: true, resolve: true, reply: false }],
    ['claimed by me', mine, { claim: false, handback: true, resolve: true, reply: true }],
    ['claimed by a colleague', theirs, { claim: false, handback: false, resolve: false, reply: false }],
    ['handed back to the bot', handedBack, { claim: false, handback: false, resolve: true, reply: false }],
    ['resolved', resolved, { claim: false, handback: false, resolve: false, reply: false }],
  ])('%s', (_label, c, expected) => {
    expect(permissions(c, ME, null)).toEqual(expected);
  });

  it('allows nothing without a case or while a request is in flight', () => {
    const none = { claim: false, handback: false, resolve: false, reply: false };
    expect(permissions(null, ME, null)).toEqual(none);
    expect(permissions(mine, ME, 'reply')).toEqual(none);
    expect(permissions(open, ME, 'claim')).toEqual(none);
  });

  it('matches the claimer by trimmed name, case-sensitively', () => {
    expect(isMine(aCase({ status: 'claimed', claimed_by: ' Dana R., RN ' }), ME)).toBe(true);
    expect(isMine(aCase({ status: 'claimed', claimed_by: 'dana r., rn' }), ME)).toBe(false);
    expect(isMine(aCase({ status: 'claimed', claimed_by: null }), ME)).toBe(false);
    expect(isMine(aCase({ status: 'claimed', claimed_by: '' }), '')).toBe(false);
    expect(isMine(aCase({ status: 'resolved', claimed_by: ME }), ME)).toBe(false);
  });

  it('enables sending only with some text in the box', () => {
    const base = { ...initialState(T0), phase: 'console' as const, staffName: ME, cases: [mine], selectedId: mine.id };
    expect(canSend({ ...base, replyDraft: '  \n ' })).toBe(false);
    expect(canSend({ ...base, replyDraft: 'On my way' })).toBe(true);
    expect(canSend({ ...base, replyDraft: 'On my way', busy: 'reply' })).toBe(false);
    expect(canSend({ ...base, cases: [theirs], replyDraft: 'x' })).toBe(false);
  });
});

describe('selection and lists', () => {
  it('prefers the loaded detail over the list copy of the selected case', () => {
    const listed = aCase({ id: 'x', status: 'open' });
    const fresh = aCase({ id: 'x', status: 'claimed', claimed_by: ME });
    expect(selectedCase({ selectedId: 'x', cases: [listed], detail: null })).toBe(listed);
    expect(selectedCase({ selectedId: 'x', cases: [listed], detail: { case: fresh, messages: [], skippedMessages: 0 } })).toBe(fresh);
    expect(selectedCase({ selectedId: 'y', cases: [listed], detail: { case: fresh, messages: [], skippedMessages: 0 } })).toBeNull();
    expect(selectedCase({ selectedId: null, cases: [listed], detail: null })).toBeNull();
  });

  it('lists resolved and handed-back cases under "all" only, in server order', () => {
    const cases = [
      aCase({ id: '1', status: 'claimed' }),
      aCase({ id: '2', status: 'resolved' }),
      aCase({ id: '3', status: 'open' }),
      aCase({ id: '4', status: 'handed_back' }),
    ];
    expect(visibleCases(cases, 'active').map((c) => c.id)).toEqual(['1', '3']);
    expect(visibleCases(cases, 'all').map((c) => c.id)).toEqual(['1', '2', '3', '4']);
  });

  it('replaces a case after an action, dropping it from "active" once resolved', () => {
    const cases = [aCase({ id: '1' }), aCase({ id: '2' })];
    const resolved = aCase({ id: '1', status: 'resolved' });
    expect(withCase(cases, resolved, 'active')?.map((c) => c.id)).toEqual(['2']);
    expect(withCase(cases, resolved, 'all')?.[0]).toBe(resolved);
    expect(withCase(null, resolved, 'all')).toBeNull();
  });
});

describe('labels and times', () => {
  it('labels priorities, reasons and senders in words', () => {
    expect(priorityLabel(s, 'immediate')).toBe('Immediate');
    expect(reasonLabel(s, 'unanswered')).toBe('Unanswered question');
    expect(['patient', 'bot', 'staff', 'system'].map((x) => senderLabel(s, x as never))).toEqual([
      'Patient',
      'Assistant',
      'Staff',
      'System',
    ]);
    expect(languageLabel('es')).toBe('Spanish (es)');
    expect(languageLabel('not a code!')).toBe('not a code!');
  });

  it.each([
    [-5 * MIN, 'under 1 min'],
    [Number.NaN, 'under 1 min'],
    [59_999, 'under 1 min'],
    [MIN, '1 min'],
    [59 * MIN + 59_000, '59 min'],
    [60 * MIN, '1 h 0 min'],
    [125 * MIN, '2 h 5 min'],
    [24 * 60 * MIN + 61 * MIN, '1 d 1 h'],
  ])('formats %d ms as %s', (ms, text) => {
    expect(formatDuration(s, ms)).toBe(text);
  });

  it('says how long an active case has waited, and when a closed one was opened', () => {
    expect(waitingText(s, aCase({ status: 'open' }), T0 + 12 * MIN)).toBe('Waiting 12 min');
    expect(waitingText(s, aCase({ status: 'claimed' }), T0 + 90 * MIN)).toBe('Waiting 1 h 30 min');
    expect(waitingText(s, aCase({ status: 'resolved' }), T0 + 3 * MIN)).toBe('Opened 3 min ago');
  });

  it('says who has the case', () => {
    expect(ownerText(s, aCase({ status: 'open' }), ME)).toBe('Unclaimed');
    expect(ownerText(s, aCase({ status: 'claimed', claimed_by: ME }), ME)).toBe('Claimed by you');
    expect(ownerText(s, aCase({ status: 'claimed', claimed_by: 'Sam' }), ME)).toBe('Claimed by Sam');
    expect(ownerText(s, aCase({ status: 'handed_back', claimed_by: 'Sam' }), ME)).toBe('Handed back to bot');
  });

  it('explains why the reply box is off', () => {
    expect(replyHint(s, aCase({ status: 'open' }), ME)).toBe('Claim the case to reply.');
    expect(replyHint(s, aCase({ status: 'claimed', claimed_by: 'Sam' }), ME)).toBe('Sam has claimed this case; only they can reply.');
    expect(replyHint(s, aCase({ status: 'resolved' }), ME)).toBe('This case is no longer open for replies.');
    expect(replyHint(s, aCase({ status: 'claimed', claimed_by: ME }), ME)).toBe(s.replyHint);
  });
});

describe('results', () => {
  const message = aMessage({ id: 'r', seq: 3, sender: 'staff' });

  it('makes not_sent a warning carrying the server notice', () => {
    expect(deliveryNotice(s, { message, delivery: 'not_sent', notice: 'The patient opted out of SMS.' })).toEqual({
      text: 'Not delivered to the patient: The patient opted out of SMS.',
      tone: 'warning',
    });
    expect(deliveryNotice(s, { message, delivery: 'not_sent', notice: null }).tone).toBe('warning');
    expect(deliveryNotice(s, { message: null, delivery: 'unknown', notice: null }).tone).toBe('warning');
    expect(deliveryNotice(s, { message, delivery: 'sent', notice: null })).toEqual({ text: s.deliverySent, tone: 'info' });
    expect(deliveryNotice(s, { message, delivery: 'queued', notice: 'Quiet hours.' }).text).toBe(`${s.deliveryQueued} Quiet hours.`);
  });

  it('prefers the server message for errors', () => {
    expect(errorText(s, { ok: false, status: 409, code: 'conflict', message: 'case is closed' })).toBe('case is closed');
    expect(errorText(s, { ok: false, status: 500, code: 'http_500', message: '' })).toBe('Something went wrong (HTTP 500).');
    expect(errorText(s, { ok: false, status: 0, code: 'network', message: '' })).toBe(s.errNetwork);
    expect(errorText(s, { ok: false, status: 200, code: 'bad_response', message: '' })).toBe(s.errBadResponse);
    expect(errorText(s, { ok: false, status: 401, code: 'unauthorized', message: "Send 'Authorization'" })).toBe(
      s.errUnauthorized,
    );
    expect(errorText(s, { ok: false, status: 401, code: 'staff_name_required', message: 'Say who you are.' })).toBe(
      'Say who you are.',
    );
  });
});

describe('checkSignIn', () => {
  it('trims the username and keeps the password exactly as typed', () => {
    expect(checkSignIn(s, '  dana  ', ' pass word ')).toEqual({ ok: true, username: 'dana', password: ' pass word ' });
  });

  it.each([
    ['', 'secret', 'username', s.errUsernameEmpty],
    ['   ', 'secret', 'username', s.errUsernameEmpty],
    ['dana', '', 'password', s.errPasswordEmpty],
    ['dana', 'x'.repeat(1025), 'password', s.errPasswordTooLong],
  ])('refuses username %j / password %j', (username, password, field, message) => {
    expect(checkSignIn(s, username, password)).toEqual({ ok: false, field, message });
  });
});

describe('signInErrorText', () => {
  it('says what to do for wrong credentials, throttling and outages', () => {
    expect(signInErrorText(s, { ok: false, status: 401, code: 'invalid_credentials', message: 'x' })).toBe(s.errInvalidCredentials);
    expect(signInErrorText(s, { ok: false, status: 429, code: 'too_many_attempts', message: '', retryAfterS: 90 })).toBe(
      'Too many sign-in attempts. Try again in 2 min.',
    );
    expect(signInErrorText(s, { ok: false, status: 429, code: 'too_many_attempts', message: '' })).toBe(s.errTooManyAttempts);
    expect(signInErrorText(s, { ok: false, status: 0, code: 'network', message: '' })).toBe(s.errNetwork);
  });
});

describe('roles', () => {
  it('shows each role its sections', () => {
    expect(tabsFor('admin')).toEqual(['cases', 'conversations', 'kb', 'dashboard', 'audit']);
    expect(tabsFor('staff')).toEqual(['cases', 'conversations', 'kb', 'dashboard']);
    expect(tabsFor('auditor')).toEqual(['cases', 'conversations', 'dashboard', 'audit']);
    expect(tabsFor(undefined)).toEqual([]);
    expect([canUpload('admin'), canUpload('staff'), canUpload('auditor')]).toEqual([true, false, false]);
  });

  it('lets an auditor do nothing with a case, even an open one', () => {
    const open = aCase({ status: 'open' });
    expect(permissions(open, 'Dana', null, 'auditor')).toEqual({ claim: false, handback: false, resolve: false, reply: false });
    expect(permissions(open, 'Dana', null, 'admin')).toMatchObject({ claim: true });
  });
});

describe('dashboard helpers', () => {
  const NOW = Date.parse('2026-12-07T15:00:00Z');
  const data: Dashboard = {
    days: 3,
    messagesPerChannel: { web: 3, sms: 1, voice: 0, api: 0 },
    messagesPerDay: [
      { day: '2026-12-05', channel: 'web', count: 2 },
      { day: '2026-12-07', channel: 'web', count: 1 },
      { day: '2026-12-07', channel: 'sms', count: 1 },
    ],
    escalations: { total: 0, open: 0, claimedInTime: 0, missedDeadline: 0 },
    triageMix: { emergency: 0, urgent: 0, routine: 0, self_care: 0 },
    latency: { p50: null, p95: null, samples: 0 },
  };

  it('lists every UTC day of the period, today last', () => {
    expect(dashboardDays(3, NOW)).toEqual(['2026-12-05', '2026-12-06', '2026-12-07']);
  });

  it('fills days without messages with zeros, one series per channel', () => {
    expect(perDaySeries(data, NOW)).toEqual({
      labels: ['2026-12-05', '2026-12-06', '2026-12-07'],
      series: [
        { channel: 'web', counts: [2, 0, 1] },
        { channel: 'sms', counts: [0, 0, 1] },
        { channel: 'voice', counts: [0, 0, 0] },
        { channel: 'api', counts: [0, 0, 0] },
      ],
    });
  });

  it('formats latencies', () => {
    expect([formatMs(s, null), formatMs(s, 840.4), formatMs(s, 2430)]).toEqual([s.none, '840 ms', '2.4 s']);
  });
});
