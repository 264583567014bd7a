import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryStorage } from '../storage';
import type { ApiResult, Case, CaseDetail, CaseList, Credentials, ReplyResult } from './api';
import { ConsoleController, type CaseApiLike, type ConsoleViewPort, type FocusTarget } from './controller';
import { CONSOLE_NAME_KEY, CONSOLE_TOKEN_KEY } from './session';
import type { ConsoleState } from './state';
import { consoleStrings as s } from './strings';
import { aCase, aMessage } from './testUtil';

const ME = 'Dana R., RN';

interface Pending {
  method: string;
  args: unknown[];
  creds: Credentials;
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
    return {
      listCases: call('listCases'),
      getCase: call('getCase'),
      claim: call('claim'),
      handback: call('handback'),
      resolve: call('resolve'),
      reply: call('reply'),
    } as CaseApiLike;
  };
  const ctl = new ConsoleController({ view, storage, strings: s, makeApi, now: () => Date.now(), pollMs: 5000 });
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

async function signedIn(cases: Case[] = [aCase()]) {
  const t = setup();
  t.ctl.start();
  void t.ctl.signIn('tok', ME);
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
    expect(t.focus).toEqual(['token']);
    expect(t.calls).toEqual([]);
  });

  it('checks the token with one list request, then keeps it in session storage', async () => {
    const t = setup();
    t.ctl.start();
    void t.ctl.signIn(' tok ', ' Dana R., RN ');
    expect(t.last()).toMatchObject({ phase: 'signin', signingIn: true });
    expect(t.storage.getItem(CONSOLE_TOKEN_KEY)).toBeNull();
    const call = await t.answer('listCases', list(aCase()));
    expect(call.creds).toEqual({ token: 'tok', staffName: ME });
    expect(call.args).toEqual(['active']);
    expect(t.last()).toMatchObject({ phase: 'console', staffName: ME, signingIn: false, error: null });
    expect(t.last().cases?.map((c) => c.id)).toEqual(['case-1']);
    expect(t.storage.getItem(CONSOLE_TOKEN_KEY)).toBe('tok');
    expect(t.storage.getItem(CONSOLE_NAME_KEY)).toBe(ME);
    expect(t.focus.at(-1)).toBe('list');
  });

  it('refuses a bad token on the sign-in form and stores nothing', async () => {
    const t = setup();
    t.ctl.start();
    void t.ctl.signIn('wrong', ME);
    await t.answer('listCases', fail(401, 'unauthorized', "Send 'Authorization: Bearer <ADMIN_TOKEN>'."));
    expect(t.last()).toMatchObject({ phase: 'signin', signingIn: false, error: s.errUnauthorized, nameDraft: ME });
    expect(t.storage.getItem(CONSOLE_TOKEN_KEY)).toBeNull();
  });

  it('validates the form before calling the server', async () => {
    const t = setup();
    t.ctl.start();
    await t.ctl.signIn('tok', '');
    expect(t.last().error).toBe(s.errNameEmpty);
    expect(t.focus.at(-1)).toBe('staff-name');
    expect(t.calls).toEqual([]);
  });

  it('resumes the session saved in this tab and polls every 5 s', async () => {
    const storage = new MemoryStorage();
    storage.setItem(CONSOLE_TOKEN_KEY, 'tok');
    storage.setItem(CONSOLE_NAME_KEY, ME);
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

  it('goes back to sign-in with a message on a 401, keeping the name', async () => {
    const t = await signedIn();
    await vi.advanceTimersByTimeAsync(5000);
    await t.answer('listCases', fail(401, 'unauthorized'));
    expect(t.last()).toMatchObject({ phase: 'signin', error: s.errUnauthorized, nameDraft: ME, cases: null });
    expect(t.storage.getItem(CONSOLE_TOKEN_KEY)).toBeNull();
    expect(t.focus.at(-1)).toBe('token');
    await vi.advanceTimersByTimeAsync(20000);
    expect(t.pending()).toEqual([]);
  });

  it('signs out: forgets the token and name, stops polling, ignores late answers', async () => {
    const t = await signedIn();
    await vi.advanceTimersByTimeAsync(5000);
    t.ctl.signOut();
    expect(t.last()).toMatchObject({ phase: 'signin', nameDraft: '', staffName: '', error: null });
    expect(t.storage.getItem(CONSOLE_TOKEN_KEY)).toBeNull();
    expect(t.storage.getItem(CONSOLE_NAME_KEY)).toBeNull();
    await t.answer('listCases', list(aCase()));
    expect(t.last().phase).toBe('signin');
    await vi.advanceTimersByTimeAsync(20000);
    expect(t.pending()).toEqual([]);
  });
});
