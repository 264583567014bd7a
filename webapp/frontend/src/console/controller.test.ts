import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryStorage } from '../storage';
import type { ApiResult, Case, CaseDetail, CaseList, Credentials, ReplyResult, Role } from './api';
import { ConsoleController, type CaseApiLike, type ConsoleViewPort, type FocusTarget } from './controller';
import { CONSOLE_TOKEN_KEY, CONSOLE_USER_KEY, saveCredentials } from './session';
import type { ConsoleState } from './state';
import { consoleStrings as s } from './strings';
import { aCase, aMessage } from './testUtil';

const ME = 'Dana R., RN';

function session(role: Role = 'staff', over: Partial<Credentials> = {}): Credentials {
  return { token: 'tok', username: 'dana', displayName: ME, role, expiresAt: null, ...over };
}

interface Pending {
  method: string;
  args: unknown[];
  creds: Credentials | null;
  resolve(result: ApiResult<unknown>): void;
}

/** A fake API whose every call waits until the test answers it. */
function setup(storage = new MemoryStorage()) {
  const calls: Pending[] = [];
  const states: ConsoleState[] = [];
  const focus: FocusTarget[] = [];
  const view: ConsoleViewPort = {
    render: (state) => states.push({ ...state }),
    focus: (target) => focus.push(target),
  };
  const makeApi = (creds: Credentials): CaseApiLike => {
    const call =
      (method: string) =>
      (...args: unknown[]) =>
        new Promise<ApiResult<never>>((resolve) =>
          calls.push({ method, args, creds, resolve: resolve as Pending['resolve'] }),
        );
    const methods = [
      'listCases',
      'getCase',
      'claim',
      'handback',
      'resolve',
      'reply',
      'logout',
      'listConversations',
      'transcript',
      'kbJobs',
      'uploadDocument',
      'dashboard',
      'audit',
      'verifyAudit',
    ] as const;
    return Object.fromEntries(methods.map((m) => [m, call(m)])) as unknown as CaseApiLike;
  };
  const login = (...args: unknown[]) =>
    new Promise<ApiResult<Credentials>>((resolve) =>
      calls.push({ method: 'login', args, creds: null, resolve: resolve as Pending['resolve'] }),
    );
  const ctl = new ConsoleController({ view, storage, strings: s, login, makeApi, now: () => Date.now(), pollMs: 5000 });
  const open = () => calls.filter((c) => !(c as { done?: boolean }).done);
  /** Answer the oldest unanswered call to `method`. */
  const answer = async (method: string, result: ApiResult<unknown>) => {
    const call = open().find((c) => c.method === method);
    if (!call) throw new Error(`no pending ${method} (have: ${open().map((c) => c.method).join(', ')})`);
    (call as { done?: boolean }).done = true;
    call.resolve(result);
    await vi.advanceTimersByTimeAsync(0);
    return call;
  };
  return {
    ctl,
    storage,
    calls,
    focus,
    answer,
    pending: () => open().map((c) => `${c.method}(${c.args.join(',')})`),
    state: () => ctl.snapshot,
    last: () => states[states.length - 1]!,
  };
}

const ok = <T>(value: T): ApiResult<T> => ({ ok: true, value });
const fail = (status: number, code: string, message = ''): ApiResult<never> => ({ ok: false, status, code, message });
const list = (...cases: Case[]): ApiResult<CaseList> => ok({ cases, skipped: 0 });
const detail = (c: Case, messages = [aMessage({ id: 'm1', seq: 1 })]): ApiResult<CaseDetail> =>
  ok({ case: c, messages, skippedMessages: 0 });

async function signedIn(cases: Case[] = [aCase()], role: Role = 'staff') {
  const t = setup();
  t.ctl.start();
  void t.ctl.signIn('dana', 'correct horse');
  await t.answer('login', ok(session(role)));
  await t.answer('listCases', list(...cases));
  return t;
}

describe('ConsoleController', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    vi.setSystemTime(new Date('2025-01-01T10:20:00Z'));
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('starts at the sign-in form when this tab has no session', () => {
    const t = setup();
    t.ctl.start();
    expect(t.last().phase).toBe('signin');
    expect(t.focus).toEqual(['username']);
    expect(t.calls).toEqual([]);
  });

  it('signs in with username and password, checks the session with one list request, then keeps it', async () => {
    const t = setup();
    t.ctl.start();
    void t.ctl.signIn(' dana ', 'correct horse');
    expect(t.last()).toMatchObject({ phase: 'signin', signingIn: true });
    const loginCall = await t.answer('login', ok(session()));
    expect(loginCall.args).toEqual(['dana', 'correct horse']);
    expect(t.storage.getItem(CONSOLE_TOKEN_KEY)).toBeNull();
    const call = await t.answer('listCases', list(aCase()));
    expect(call.creds).toMatchObject({ token: 'tok', role: 'staff' });
    expect(call.args).toEqual(['active']);
    expect(t.last()).toMatchObject({ phase: 'console', staffName: ME, signingIn: false, error: null, tab: 'cases' });
    expect(t.last().user).toEqual({ username: 'dana', displayName: ME, role: 'staff' });
    expect(t.last().cases?.map((c) => c.id)).toEqual(['case-1']);
    expect(t.storage.getItem(CONSOLE_TOKEN_KEY)).toBe('tok');
    expect(JSON.parse(t.storage.getItem(CONSOLE_USER_KEY)!)).toMatchObject({ username: 'dana', role: 'staff' });
    expect(t.focus.at(-1)).toBe('list');
  });

  it('refuses a wrong password on the sign-in form, keeps the username and stores nothing', async () => {
    const t = setup();
    t.ctl.start();
    void t.ctl.signIn('dana', 'wrong');
    await t.answer('login', fail(401, 'invalid_credentials', 'Wrong username or password.'));
    expect(t.last()).toMatchObject({ phase: 'signin', signingIn: false, error: s.errInvalidCredentials, nameDraft: 'dana' });
    expect(t.focus.at(-1)).toBe('password');
    expect(t.storage.getItem(CONSOLE_TOKEN_KEY)).toBeNull();
    expect(t.pending()).toEqual([]);
  });

  it('says how long to wait when sign-in is throttled', async () => {
    const t = setup();
    t.ctl.start();
    void t.ctl.signIn('dana', 'again');
    await t.answer('login', { ok: false, status: 429, code: 'too_many_attempts', message: '', retryAfterS: 300 });
    expect(t.last().error).toBe('Too many sign-in attempts. Try again in 5 min.');
  });

  it('validates the form before calling the server', async () => {
    const t = setup();
    t.ctl.start();
    await t.ctl.signIn('dana', '');
    expect(t.last().error).toBe(s.errPasswordEmpty);
    expect(t.focus.at(-1)).toBe('password');
    expect(t.calls).toEqual([]);
  });

  it('resumes the session saved in this tab and polls every 5 s', async () => {
    const storage = new MemoryStorage();
    saveCredentials(storage, session());
    const t = setup(storage);
    t.ctl.start();
    expect(t.last()).toMatchObject({ phase: 'console', staffName: ME, cases: null });
    await t.answer('listCases', list(aCase()));
    expect(t.pending()).toEqual([]);
    await vi.advanceTimersByTimeAsync(4999);
    expect(t.pending()).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(t.pending()).toEqual(['listCases(active)']);
  });

  it('loads the selected case with the list, and keeps polling both', async () => {
    const t = await signedIn();
    t.ctl.select('case-1');
    expect(t.last()).toMatchObject({ selectedId: 'case-1', detail: null });
    expect(t.pending()).toEqual(['listCases(active)', 'getCase(case-1)']);
    await t.answer('listCases', list(aCase()));
    await t.answer('getCase', detail(aCase()));
    expect(t.last().detail?.messages.map((m) => m.id)).toEqual(['m1']);
    await vi.advanceTimersByTimeAsync(5000);
    expect(t.pending()).toEqual(['listCases(active)', 'getCase(case-1)']);
  });

  it('switches the list filter and drops an answer for the old filter', async () => {
    const t = await signedIn();
    void t.ctl.refresh();
    t.ctl.setFilter('all');
    expect(t.last()).toMatchObject({ filter: 'all', cases: null });
    await t.answer('listCases', list(aCase({ id: 'stale' })));
    expect(t.last().cases).toBeNull();
    expect(t.pending()).toEqual(['listCases(all)']);
    await t.answer('listCases', list(aCase({ id: 'r', status: 'resolved' })));
    expect(t.last().cases?.map((c) => c.id)).toEqual(['r']);
  });

  it('claims a case, then only this staff member may reply or hand it back', async () => {
    const t = await signedIn();
    t.ctl.select('case-1');
    await t.answer('listCases', list(aCase()));
    await t.answer('getCase', detail(aCase()));
    void t.ctl.claim();
    expect(t.last().busy).toBe('claim');
    const claimed = aCase({ status: 'claimed', claimed_by: ME, claimed_at: '2025-01-01T10:20:00Z' });
    await t.answer('claim', ok(claimed));
    expect(t.last()).toMatchObject({ busy: null, notice: { text: s.claimed, tone: 'info' } });
    expect(t.last().detail?.case.status).toBe('claimed');
    expect(t.last().cases?.[0]?.status).toBe('claimed');
    expect(t.focus.at(-1)).toBe('reply');
    // …and refreshes right away.
    expect(t.pending()).toEqual(['listCases(active)', 'getCase(case-1)']);
  });

  it('shows a 409 from an action and keeps it across background refreshes', async () => {
    const t = await signedIn();
    t.ctl.select('case-1');
    await t.answer('listCases', list(aCase()));
    await t.answer('getCase', detail(aCase()));
    void t.ctl.claim();
    await t.answer('claim', fail(409, 'conflict', 'claimed by someone else'));
    expect(t.last()).toMatchObject({ busy: null, error: 'claimed by someone else' });
    await t.answer('listCases', list(aCase({ status: 'claimed', claimed_by: 'Sam' })));
    await t.answer('getCase', detail(aCase({ status: 'claimed', claimed_by: 'Sam' })));
    expect(t.last().error).toBe('claimed by someone else');
    t.ctl.dismissError();
    expect(t.last().error).toBeNull();
  });

  it('shows a refresh failure until a refresh works again', async () => {
    const t = await signedIn();
    void t.ctl.refresh();
    await t.answer('listCases', fail(0, 'network'));
    expect(t.last().error).toBe(s.errNetwork);
    expect(t.last().cases?.map((c) => c.id)).toEqual(['case-1']);
    await vi.advanceTimersByTimeAsync(5000);
    await t.answer('listCases', list(aCase()));
    expect(t.last().error).toBeNull();
  });

  it('sends a reply, empties the box and shows how it was delivered', async () => {
    const mine = aCase({ status: 'claimed', claimed_by: ME });
    const t = await signedIn([mine]);
    t.ctl.select('case-1');
    await t.answer('listCases', list(mine));
    await t.answer('getCase', detail(mine));
    t.ctl.replyInput('  Please call 911 now.\n');
    expect(t.last().replyDraft).toBe('  Please call 911 now.\n');
    void t.ctl.sendReply();
    expect(t.last().busy).toBe('reply');
    void t.ctl.sendReply(); // a second Enter while sending does nothing
    const reply = t.calls.filter((c) => c.method === 'reply');
    expect(reply.map((c) => c.args)).toEqual([['case-1', 'Please call 911 now.']]);
    const sent = aMessage({ id: 'm2', seq: 2, sender: 'staff', direction: 'outbound', text: 'Please call 911 now.' });
    await t.answer('reply', ok<ReplyResult>({ message: sent, delivery: 'not_sent', notice: 'The patient opted out of SMS.' }));
    expect(t.last()).toMatchObject({
      busy: null,
      replyDraft: '',
      notice: { text: 'Not delivered to the patient: The patient opted out of SMS.', tone: 'warning' },
    });
    expect(t.last().detail?.messages.map((m) => m.id)).toEqual(['m1', 'm2']);
  });

  it('keeps the reply text when sending fails', async () => {
    const mine = aCase({ status: 'claimed', claimed_by: ME });
    const t = await signedIn([mine]);
    t.ctl.select('case-1');
    await t.answer('listCases', list(mine));
    await t.answer('getCase', detail(mine));
    t.ctl.replyInput('Call us back');
    void t.ctl.sendReply();
    await t.answer('reply', fail(409, 'case_closed', 'case is closed'));
    expect(t.last()).toMatchObject({ busy: null, replyDraft: 'Call us back', error: 'case is closed' });
  });

  it('does not send for a case this staff member has not claimed', async () => {
    const t = await signedIn([aCase({ status: 'claimed', claimed_by: 'Sam' })]);
    t.ctl.select('case-1');
    t.ctl.replyInput('hello');
    await t.ctl.sendReply();
    await t.ctl.handback();
    await t.ctl.resolve();
    expect(t.calls.map((c) => c.method)).not.toContain('reply');
    expect(t.calls.map((c) => c.method)).not.toContain('handback');
    expect(t.calls.map((c) => c.method)).not.toContain('resolve');
  });

  it('keeps a draft per case while switching', async () => {
    const a = aCase({ id: 'a', status: 'claimed', claimed_by: ME });
    const b = aCase({ id: 'b', status: 'claimed', claimed_by: ME });
    const t = await signedIn([a, b]);
    t.ctl.select('a');
    t.ctl.replyInput('for a');
    t.ctl.select('b');
    expect(t.last().replyDraft).toBe('');
    t.ctl.select('a');
    expect(t.last().replyDraft).toBe('for a');
  });

  it('ignores a refresh that started before an action finished', async () => {
    const t = await signedIn();
    t.ctl.select('case-1');
    await t.answer('listCases', list(aCase()));
    await t.answer('getCase', detail(aCase()));
    await vi.advanceTimersByTimeAsync(5000); // poll starts: list + detail in flight
    void t.ctl.resolve();
    await t.answer('resolve', ok(aCase({ status: 'resolved' })));
    expect(t.last().cases).toEqual([]);
    // The poll's answers predate the resolve: dropped, and asked again.
    await t.answer('listCases', list(aCase()));
    await t.answer('getCase', detail(aCase()));
    expect(t.last().cases).toEqual([]);
    expect(t.last().detail?.case.status).toBe('resolved');
    expect(t.pending()).toEqual(['listCases(active)', 'getCase(case-1)']);
  });

  it('goes back to sign-in with a message when the session expires (401), keeping the username', async () => {
    const t = await signedIn();
    await vi.advanceTimersByTimeAsync(5000);
    await t.answer('listCases', fail(401, 'unauthorized'));
    expect(t.last()).toMatchObject({ phase: 'signin', error: s.errUnauthorized, nameDraft: 'dana', cases: null, user: null });
    expect(t.storage.getItem(CONSOLE_TOKEN_KEY)).toBeNull();
    expect(t.focus.at(-1)).toBe('password');
    await vi.advanceTimersByTimeAsync(20000);
    expect(t.pending()).toEqual([]);
  });

  it('signs out: ends the session on the server, forgets it here, stops polling, ignores late answers', async () => {
    const t = await signedIn();
    await vi.advanceTimersByTimeAsync(5000);
    t.ctl.signOut();
    expect(t.last()).toMatchObject({ phase: 'signin', nameDraft: '', staffName: '', error: null, user: null });
    expect(t.storage.getItem(CONSOLE_TOKEN_KEY)).toBeNull();
    expect(t.storage.getItem(CONSOLE_USER_KEY)).toBeNull();
    await t.answer('logout', ok(true));
    await t.answer('listCases', list(aCase()));
    expect(t.last().phase).toBe('signin');
    await vi.advanceTimersByTimeAsync(20000);
    expect(t.pending()).toEqual([]);
  });

  it('does not resume a saved session that has expired', () => {
    const storage = new MemoryStorage();
    saveCredentials(storage, session('staff', { expiresAt: '2025-01-01T10:19:59Z' }));
    const t = setup(storage);
    t.ctl.start();
    expect(t.last().phase).toBe('signin');
    expect(storage.getItem(CONSOLE_TOKEN_KEY)).toBeNull();
    expect(t.calls).toEqual([]);
  });

  it('never sends a case action for an auditor', async () => {
    const t = await signedIn([aCase()], 'auditor');
    t.ctl.select('case-1');
    await t.answer('listCases', list(aCase()));
    await t.answer('getCase', detail(aCase()));
    await t.ctl.claim();
    await t.ctl.resolve();
    expect(t.pending()).toEqual([]);
  });

  it('loads a section when it is shown, and only the sections of the role', async () => {
    const t = await signedIn([aCase()], 'auditor');
    t.ctl.showTab('kb');
    expect(t.last().tab).toBe('cases');
    t.ctl.showTab('dashboard');
    expect(t.last()).toMatchObject({ tab: 'dashboard', dashboard: { loading: true, data: null } });
    const call = await t.answer('dashboard', ok({ days: 7 }));
    expect(call.args).toEqual([7]);
    expect(t.last().dashboard).toMatchObject({ loading: false, data: { days: 7 } });
  });

  it('pages through conversations and opens a transcript', async () => {
    const t = await signedIn();
    t.ctl.showTab('conversations');
    const summary = (id: string) => ({ id, channel: 'web', language: 'en', mode: 'bot', safety_level: 'none', started_at: 'x', last_message_at: 'y', message_count: 2 });
    await t.answer('listConversations', ok({ conversations: [summary('c1'), summary('c2')], skipped: 0, nextBefore: 'T2' }));
    void t.ctl.moreConversations();
    const more = await t.answer('listConversations', ok({ conversations: [summary('c2'), summary('c3')], skipped: 1, nextBefore: null }));
    expect(more.args).toEqual(['T2']);
    expect(t.last().conversations).toMatchObject({ nextBefore: null, skipped: 1, loading: false });
    expect(t.last().conversations.items?.map((c) => c.id)).toEqual(['c1', 'c2', 'c3']);
    void t.ctl.openConversation('c2');
    expect(t.last().conversations).toMatchObject({ selectedId: 'c2', transcript: null });
    expect(t.focus.at(-1)).toBe('transcript');
    await t.answer('transcript', ok({ conversationId: 'c2', messages: [], skippedMessages: 0 }));
    expect(t.last().conversations.transcript?.conversationId).toBe('c2');
  });

  it('treats a missing audit API (404) as unavailable, not as an error', async () => {
    const t = await signedIn([aCase()], 'admin');
    t.ctl.showTab('audit');
    await t.answer('audit', fail(404, 'http_404'));
    expect(t.last()).toMatchObject({ error: null, audit: { unavailable: true, loading: false } });
    void t.ctl.verifyAudit();
    await t.answer('verifyAudit', fail(404, 'http_404'));
    expect(t.last().error).toBeNull();
  });

  it('shows the verdict of the audit chain check', async () => {
    const t = await signedIn([aCase()], 'auditor');
    void t.ctl.verifyAudit();
    expect(t.last().audit.verifying).toBe(true);
    await t.answer('verifyAudit', ok({ ok: false, checked: 40, firstBadId: '17' }));
    expect(t.last().audit).toMatchObject({ verifying: false, verdict: { ok: false, firstBadId: '17' } });
  });

  it('uploads a document as an admin only, then reloads the job list', async () => {
    const staff = await signedIn([aCase()], 'staff');
    await staff.ctl.upload(new Blob(['x']), 'a.md', null);
    expect(staff.pending()).toEqual([]);

    const t = await signedIn([aCase()], 'admin');
    await t.ctl.upload(null, '', null);
    expect(t.last().error).toBe(s.kbChooseFile);
    void t.ctl.upload(new Blob(['# Flu']), 'flu.md', 'en');
    expect(t.last().kb.uploading).toBe(true);
    const call = await t.answer('uploadDocument', ok({ id: 'j1', filename: 'flu.md' }));
    expect(call.args.slice(1)).toEqual(['flu.md', 'en']);
    expect(t.last().notice?.text).toContain('flu.md');
    await t.answer('kbJobs', ok({ items: [{ id: 'j1' }], skipped: 0 }));
    expect(t.last().kb).toMatchObject({ uploading: false, jobs: [{ id: 'j1' }] });
  });

  it('signs out when a section finds the session ended', async () => {
    const t = await signedIn();
    t.ctl.showTab('dashboard');
    await t.answer('dashboard', fail(401, 'unauthorized'));
    expect(t.last()).toMatchObject({ phase: 'signin', error: s.errUnauthorized });
  });
});
