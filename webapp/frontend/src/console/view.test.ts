// @vitest-environment happy-dom
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryStorage } from '../storage';
import { CaseApi, type FetchLike } from './api';
import { ConsoleController } from './controller';
import { CONSOLE_TOKEN_KEY } from './session';
import { consoleStrings as s } from './strings';
import { wireCase, wireMessage } from './testUtil';
import { ConsoleView } from './view';

const ME = 'Dana R., RN';
const TOKEN = 'admin-secret';

interface Request {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: unknown;
}

type Reply = { status: number; body: unknown };

/** A small in-memory stand-in for the case API, following the contract. */
function fakeServer() {
  const cases = new Map<string, Record<string, unknown>>();
  const messages = new Map<string, Record<string, unknown>[]>();
  const requests: Request[] = [];
  /** Per-path overrides for the next answer (e.g. a 409). */
  const next = new Map<string, Reply>();
  let hold: Promise<void> | null = null;

  const err = (status: number, code: string, message: string): Reply => ({ status, body: { error: { code, message } } });

  function route(req: Request): Reply {
    if (req.headers.Authorization !== `Bearer ${TOKEN}`) return err(401, 'unauthorized', "Send 'Authorization: Bearer <ADMIN_TOKEN>'.");
    const override = next.get(`${req.method} ${req.path}`);
    if (override) {
      next.delete(`${req.method} ${req.path}`);
      return override;
    }
    const staff = req.headers['X-Staff-Name'] ?? '';
    const url = new URL(req.path, 'http://x');
    if (req.method === 'GET' && url.pathname === '/admin/api/v1/cases') {
      const all = [...cases.values()];
      const active = url.searchParams.get('status') === 'active';
      return { status: 200, body: { cases: all.filter((c) => !active || c.status === 'open' || c.status === 'claimed') } };
    }
    const m = /^\/admin\/api\/v1\/cases\/([^/]+)(?:\/(claim|reply|handback|resolve))?$/.exec(url.pathname);
    const c = m ? cases.get(decodeURIComponent(m[1]!)) : undefined;
    if (!m || !c) return err(404, 'not_found', 'No such case.');
    const id = String(c.id);
    switch (`${req.method} ${m[2] ?? ''}`) {
      case 'GET ':
        return { status: 200, body: { case: c, messages: messages.get(id) ?? [] } };
      case 'POST claim':
        if (c.status === 'claimed' && c.claimed_by !== staff) return err(409, 'conflict', 'claimed by someone else');
        Object.assign(c, { status: 'claimed', claimed_by: staff, claimed_at: new Date().toISOString() });
        return { status: 200, body: { case: c } };
      case 'POST handback':
        Object.assign(c, { status: 'handed_back' });
        return { status: 200, body: { case: c } };
      case 'POST resolve':
        Object.assign(c, { status: 'resolved' });
        return { status: 200, body: { case: c } };
      case 'POST reply': {
        const list = messages.get(id) ?? [];
        const msg = wireMessage({
          id: `s${list.length + 1}`,
          seq: list.length + 1,
          direction: 'outbound',
          sender: 'staff',
          text: (req.body as { text: string }).text,
          status: 'queued',
        });
        messages.set(id, [...list, msg]);
        const optedOut = c.channel === 'sms';
        return {
          status: 200,
          body: optedOut
            ? { message: msg, delivery: 'not_sent', notice: 'The patient opted out of SMS (STOP).' }
            : { message: msg, delivery: 'sent', notice: null },
        };
      }
    }
    return err(405, 'method', 'Method not allowed');
  }

  const fetch: FetchLike = async (url, init) => {
    const req: Request = {
      method: init.method ?? 'GET',
      path: url,
      headers: init.headers as Record<string, string>,
      body: typeof init.body === 'string' ? JSON.parse(init.body) : undefined,
    };
    requests.push(req);
    if (hold) await hold;
    const { status, body } = route(req);
    return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
  };

  return {
    fetch,
    requests,
    next,
    add(c: Record<string, unknown>, msgs: Record<string, unknown>[] = []) {
      cases.set(String(c.id), c);
      messages.set(String(c.id), msgs);
    },
    get: (id: string) => cases.get(id)!,
    /** Hold every answer until the returned function is called. */
    holdAnswers() {
      let release!: () => void;
      hold = new Promise((resolve) => (release = resolve));
      return () => {
        hold = null;
        release();
      };
    },
  };
}

function mount(server = fakeServer(), storage = new MemoryStorage()) {
  document.body.replaceChildren();
  const root = document.createElement('div');
  root.id = 'console-app';
  document.body.append(root);
  const view = new ConsoleView(root, s, {
    signIn: (t, n) => void ctl.signIn(t, n),
    signOut: () => ctl.signOut(),
    setFilter: (f) => ctl.setFilter(f),
    refresh: () => void ctl.refresh(),
    select: (id) => ctl.select(id),
    claim: () => void ctl.claim(),
    handback: () => void ctl.handback(),
    resolve: () => void ctl.resolve(),
    replyInput: (text) => ctl.replyInput(text),
    sendReply: () => void ctl.sendReply(),
    dismissNotice: () => ctl.dismissNotice(),
    dismissError: () => ctl.dismissError(),
  });
  const ctl: ConsoleController = new ConsoleController({
    view,
    storage,
    strings: s,
    makeApi: (creds) => new CaseApi(creds, server.fetch),
  });
  ctl.start();
  const $ = <T extends HTMLElement = HTMLElement>(selector: string) => {
    const node = document.querySelector<T>(selector);
    if (!node) throw new Error(`${selector} not found`);
    return node;
  };
  return { ctl, server, storage, root, $ };
}

/** Visible = neither it nor an ancestor has the `hidden` attribute. */
function visible(node: HTMLElement): boolean {
  for (let n: HTMLElement | null = node; n; n = n.parentElement) if (n.hidden) return false;
  return true;
}

function type(field: HTMLInputElement | HTMLTextAreaElement, value: string): void {
  field.value = value;
  field.dispatchEvent(new Event('input', { bubbles: true }));
}

function key(field: HTMLElement, init: KeyboardEventInit): KeyboardEvent {
  const event = new KeyboardEvent('keydown', { bubbles: true, cancelable: true, ...init });
  field.dispatchEvent(event);
  return event;
}

const flush = () => vi.advanceTimersByTimeAsync(0);

async function signIn(t: ReturnType<typeof mount>, token = TOKEN, name = ME) {
  type(t.$<HTMLInputElement>('#token'), token);
  type(t.$<HTMLInputElement>('#staff-name'), name);
  t.$<HTMLFormElement>('#signin-form').requestSubmit();
  await flush();
}

async function open(t: ReturnType<typeof mount>, id: string) {
  t.$(`[data-case-id="${id}"] button`).click();
  await flush();
}

const hostile = '<img src=x onerror="alert(1)"><script>alert(2)</script>\u202Egnp.exe';

describe('ConsoleView (DOM)', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    vi.setSystemTime(new Date('2025-01-01T10:20:00Z'));
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('shows an accessible sign-in form first', () => {
    const { $ } = mount();
    expect(visible($('#signin-form'))).toBe(true);
    expect(visible($('#console-main'))).toBe(false);
    expect($<HTMLInputElement>('#token').type).toBe('password');
    expect(document.querySelector('label[for="token"]')?.textContent).toBe('Admin token');
    expect(document.querySelector('label[for="staff-name"]')?.textContent).toBe(s.staffNameLabel);
    expect($('#error').getAttribute('role')).toBe('alert');
    expect($('#notice').getAttribute('aria-live')).toBe('polite');
    expect(document.activeElement).toBe($('#token'));
  });

  it('signs in, lists cases with text badges, and signs out', async () => {
    const t = mount();
    t.server.add(wireCase({ id: 'c1', priority: 'immediate', reason: 'emergency', channel: 'sms', overdue: true, created_at: '2025-01-01T10:08:00Z' }));
    t.server.add(wireCase({ id: 'c2', priority: 'normal', reason: 'request', status: 'claimed', claimed_by: 'Sam K., MD' }));
    await signIn(t);
    expect(t.server.requests[0]?.headers).toMatchObject({ Authorization: `Bearer ${TOKEN}`, 'X-Staff-Name': ME });
    expect(visible(t.$('#signin-form'))).toBe(false);
    expect(visible(t.$('#case-list'))).toBe(true);
    expect(t.$<HTMLInputElement>('#token').value).toBe('');
    expect(t.$('#signed-in-as').textContent).toBe(`Signed in as ${ME}`);

    const rows = [...document.querySelectorAll<HTMLElement>('#case-list [data-case-id]')];
    expect(rows.map((r) => r.dataset.caseId)).toEqual(['c1', 'c2']);
    const first = rows[0]!;
    expect(first.querySelector('.badge--immediate')?.textContent).toBe('Priority: Immediate');
    expect(first.textContent).toContain('Emergency');
    expect(first.textContent).toContain('SMS');
    expect(first.textContent).toContain('Waiting 12 min');
    expect(visible(first.querySelector<HTMLElement>('.badge--overdue')!)).toBe(true);
    expect(first.textContent).toContain('Unclaimed');
    expect(visible(rows[1]!.querySelector<HTMLElement>('.badge--overdue')!)).toBe(false);
    expect(rows[1]!.textContent).toContain('Claimed by Sam K., MD');

    await open(t, 'c1');
    expect(t.$('#summary-clinician').textContent).toBe(wireCase().summary_clinician);
    t.$('#sign-out').click();
    expect(visible(t.$('#signin-form'))).toBe(true);
    expect(document.body.textContent).not.toContain(wireCase().summary_clinician);
    expect(document.body.textContent).not.toContain('Sam K., MD');
    expect(t.storage.getItem(CONSOLE_TOKEN_KEY)).toBeNull();
    expect(document.querySelectorAll('[data-case-id]')).toHaveLength(0);
  });

  it('keeps the sign-in form with a message for a wrong token', async () => {
    const t = mount();
    await signIn(t, 'nope');
    expect(visible(t.$('#signin-form'))).toBe(true);
    expect(t.$('#error').textContent).toBe(s.errUnauthorized);
    expect(t.$<HTMLInputElement>('#staff-name').value).toBe(ME);
  });

  it('shows the case: summary, triage, transcript as text, and claims it', async () => {
    const t = mount();
    t.server.add(
      wireCase({
        id: 'c1',
        summary_clinician: `Chest pain. ${hostile}`,
        triage: { disposition: 'emergency_department', reasons: ['chest pain', '<b>bold</b>'] },
      }),
      [
        wireMessage({ id: 'm1', seq: 1, text: hostile }),
        wireMessage({ id: 'm2', seq: 2, sender: 'bot', direction: 'outbound', text: 'Please call 911.' }),
        wireMessage({ id: 'm3', seq: 3, sender: 'system', direction: 'outbound', text: 'Escalated.' }),
      ],
    );
    await signIn(t);
    await open(t, 'c1');
    const detail = t.$('#case-detail');
    expect(detail.dataset.shownCase).toBe('c1');
    expect(t.$('#summary-clinician').textContent).toBe('Chest pain. <img src=x onerror="alert(1)"><script>alert(2)</script>gnp.exe');
    expect(t.$('#triage-disposition').textContent).toBe('emergency_department');
    expect([...t.$('#triage-reasons').children].map((li) => li.textContent)).toEqual(['chest pain', '<b>bold</b>']);

    const log = t.$('#transcript');
    expect(log.getAttribute('role')).toBe('log');
    const msgs = [...log.querySelectorAll<HTMLElement>('[data-message-id]')];
    expect(msgs.map((m) => m.querySelector('.tmsg-sender')?.textContent)).toEqual(['Patient', 'Assistant', 'System']);
    expect(msgs[0]!.querySelector('.tmsg-text')?.textContent).toBe('<img src=x onerror="alert(1)"><script>alert(2)</script>gnp.exe');
    expect(document.querySelector('#console-app img, #console-app script, #console-app b')).toBeNull();

    // Open and unclaimed: claim, hand back or resolve; no reply.
    expect(t.$<HTMLButtonElement>('#claim').disabled).toBe(false);
    expect(t.$<HTMLButtonElement>('#handback').disabled).toBe(false);
    expect(t.$<HTMLButtonElement>('#resolve').disabled).toBe(false);
    expect(t.$<HTMLTextAreaElement>('#reply-text').disabled).toBe(true);
    expect(t.$<HTMLButtonElement>('#reply-send').disabled).toBe(true);
    expect(t.$('#reply-hint').textContent).toBe('Claim the case to reply.');

    t.$('#claim').click();
    expect(t.$<HTMLButtonElement>('#claim').disabled).toBe(true);
    await flush();
    expect(t.server.requests.at(-3)).toMatchObject({ method: 'POST', path: '/admin/api/v1/cases/c1/claim' });
    expect(t.$('#notice').textContent).toBe(s.claimed);
    expect(t.$<HTMLButtonElement>('#claim').disabled).toBe(true);
    expect(t.$<HTMLButtonElement>('#handback').disabled).toBe(false);
    expect(t.$<HTMLTextAreaElement>('#reply-text').disabled).toBe(false);
    expect(document.activeElement).toBe(t.$('#reply-text'));
    expect(t.$('[data-case-id="c1"]').textContent).toContain('Claimed by you');
  });

  it('sends with Enter, not Shift+Enter, and shows a not_sent notice prominently', async () => {
    const t = mount();
    t.server.add(wireCase({ id: 'c1', channel: 'sms', status: 'claimed', claimed_by: ME }), [wireMessage({ id: 'm1', seq: 1 })]);
    await signIn(t);
    await open(t, 'c1');
    const box = t.$<HTMLTextAreaElement>('#reply-text');
    type(box, 'Line one');
    expect(t.$<HTMLButtonElement>('#reply-send').disabled).toBe(false);
    const shift = key(box, { key: 'Enter', shiftKey: true });
    expect(shift.defaultPrevented).toBe(false);
    expect(t.server.requests.some((r) => r.path.endsWith('/reply'))).toBe(false);

    const release = t.server.holdAnswers();
    const enter = key(box, { key: 'Enter' });
    expect(enter.defaultPrevented).toBe(true);
    expect(box.disabled).toBe(true);
    expect(t.$<HTMLButtonElement>('#reply-send').disabled).toBe(true);
    expect(t.$('#reply-send').textContent).toBe('Sending…');
    release();
    await flush();

    expect(t.server.requests.find((r) => r.path.endsWith('/reply'))?.body).toEqual({ text: 'Line one' });
    expect(box.value).toBe('');
    expect(box.disabled).toBe(false);
    expect(t.$('#notice').textContent).toBe('Not delivered to the patient: The patient opted out of SMS (STOP).');
    expect(t.$('#notice').parentElement?.dataset.tone).toBe('warning');
    const last = [...t.$('#transcript').querySelectorAll<HTMLElement>('[data-message-id]')].at(-1)!;
    expect(last.dataset.sender).toBe('staff');
    expect(last.querySelector('.tmsg-sender')?.textContent).toBe('Staff');
    expect(last.querySelector('.tmsg-text')?.textContent).toBe('Line one');
  });

  it('keeps the text and shows the server message when sending fails', async () => {
    const t = mount();
    t.server.add(wireCase({ id: 'c1', status: 'claimed', claimed_by: ME }));
    await signIn(t);
    await open(t, 'c1');
    t.server.next.set('POST /admin/api/v1/cases/c1/reply', {
      status: 409,
      body: { error: { code: 'case_closed', message: 'case is closed' } },
    });
    type(t.$<HTMLTextAreaElement>('#reply-text'), 'Are you still there?');
    t.$('#reply-send').click();
    await flush();
    expect(t.$('#error').textContent).toBe('case is closed');
    expect(t.$<HTMLTextAreaElement>('#reply-text').value).toBe('Are you still there?');
    t.$('#error-dismiss').click();
    expect(t.$('#error').textContent).toBe('');
  });

  it("locks a colleague's case and shows a 409 from the server", async () => {
    const t = mount();
    t.server.add(wireCase({ id: 'c1', status: 'claimed', claimed_by: 'Sam K., MD' }));
    t.server.add(wireCase({ id: 'c2' }));
    await signIn(t);
    await open(t, 'c1');
    for (const id of ['#claim', '#handback', '#resolve', '#reply-text', '#reply-send']) {
      expect(t.$<HTMLButtonElement>(id).disabled).toBe(true);
    }
    expect(t.$('#reply-hint').textContent).toBe('Sam K., MD has claimed this case; only they can reply.');

    await open(t, 'c2');
    t.server.get('c2').status = 'claimed';
    t.server.get('c2').claimed_by = 'Sam K., MD';
    t.$('#claim').click();
    await flush();
    expect(t.$('#error').textContent).toBe('claimed by someone else');
    expect(t.$<HTMLButtonElement>('#claim').disabled).toBe(true);
  });

  it('hands back and resolves; resolved cases only under "all"', async () => {
    const t = mount();
    t.server.add(wireCase({ id: 'c1', status: 'claimed', claimed_by: ME }));
    await signIn(t);
    await open(t, 'c1');
    t.$('#handback').click();
    await flush();
    expect(t.$('#notice').textContent).toBe(s.handedBack);
    expect(t.$('#case-status').textContent).toBe('Handed back to bot');
    expect(document.querySelector('[data-case-id="c1"]')).toBeNull();
    expect(t.$<HTMLButtonElement>('#claim').disabled).toBe(true);
    expect(t.$<HTMLButtonElement>('#handback').disabled).toBe(true);
    expect(t.$<HTMLButtonElement>('#resolve').disabled).toBe(false);
    t.$('#resolve').click();
    await flush();
    expect(t.$('#case-status').textContent).toBe('Resolved');
    for (const id of ['#claim', '#handback', '#resolve', '#reply-text']) {
      expect(t.$<HTMLButtonElement>(id).disabled).toBe(true);
    }
    expect(t.$('#case-list-status').textContent).toBe('No active cases.');

    const filter = t.$<HTMLSelectElement>('#case-filter');
    filter.value = 'all';
    filter.dispatchEvent(new Event('change', { bubbles: true }));
    await flush();
    expect(t.server.requests.at(-2)?.path).toBe('/admin/api/v1/cases?status=all');
    expect(t.$('[data-case-id="c1"]').dataset.status).toBe('resolved');
  });

  it('refreshes every 5 s without rebuilding the transcript', async () => {
    const t = mount();
    t.server.add(wireCase({ id: 'c1' }), [wireMessage({ id: 'm1', seq: 1 })]);
    await signIn(t);
    await open(t, 'c1');
    const log = t.$('#transcript');
    const firstNode = log.querySelector('[data-message-id="m1"]');
    t.server.add(wireCase({ id: 'c1' }), [wireMessage({ id: 'm1', seq: 1 }), wireMessage({ id: 'm2', seq: 2, text: 'still here?' })]);
    t.server.add(wireCase({ id: 'c9', priority: 'immediate', reason: 'crisis' }));
    await vi.advanceTimersByTimeAsync(5000);
    expect(t.$('#transcript')).toBe(log);
    expect(log.querySelector('[data-message-id="m1"]')).toBe(firstNode);
    expect(log.querySelectorAll('[data-message-id]')).toHaveLength(2);
    expect(document.querySelector('[data-case-id="c9"]')).not.toBeNull();
  });

  it('warns when the server sends cases or messages it cannot show', async () => {
    const t = mount();
    t.server.add(wireCase({ id: 'c1' }), [wireMessage({ id: 'm1', seq: 1 }), wireMessage({ id: 'bad', seq: 2, sender: 'robot' })]);
    t.server.add(wireCase({ id: 'c2', priority: 'whenever' }));
    await signIn(t);
    expect(t.$('#case-list-status').textContent).toBe(format1(s.skippedCases));
    await open(t, 'c1');
    expect(t.$('#transcript-skipped').textContent).toBe(format1(s.skippedMessages));
    expect(t.$('#transcript').querySelectorAll('[data-message-id]')).toHaveLength(1);
  });

  it('goes back to sign-in when the token stops working', async () => {
    const storage = new MemoryStorage();
    storage.setItem('clinic.console.token', 'revoked');
    storage.setItem('clinic.console.staffName', ME);
    const t = mount(fakeServer(), storage);
    expect(visible(t.$('#console-main'))).toBe(true);
    await flush();
    expect(visible(t.$('#signin-form'))).toBe(true);
    expect(t.$('#error').textContent).toBe(s.errUnauthorized);
    expect(t.$<HTMLInputElement>('#staff-name').value).toBe(ME);
    expect(document.activeElement).toBe(t.$('#token'));
  });
});

function format1(template: string): string {
  return template.replace('{n}', '1');
}
