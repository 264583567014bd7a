// @vitest-environment happy-dom
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryStorage } from '../storage';
import { ConsoleApi, login, type FetchLike, type Role } from './api';
import { ConsoleController } from './controller';
import type { ChartFactory, ChartSpec } from './dashboardView';
import { CONSOLE_TOKEN_KEY, saveCredentials } from './session';
import { consoleStrings as s } from './strings';
import { wireCase, wireMessage } from './testUtil';
import { ConsoleView } from './view';

const ME = 'Dana R., RN';
const TOKEN = 'session-dana';
const PASSWORD = 'correct horse battery';

/** The fake server's accounts: username -> [display name, role, token]. */
const ACCOUNTS: Record<string, [string, Role, string]> = {
  dana: [ME, 'staff', TOKEN],
  lee: ['Lee Park', 'auditor', 'session-lee'],
  root: ['Ada Admin', 'admin', 'session-root'],
};

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
  /** Fixed answers for the other sections, by "METHOD /path". */
  const sections = new Map<string, Reply>();
  /** Per-path overrides for the next answer (e.g. a 409). */
  const next = new Map<string, Reply>();
  let hold: Promise<void> | null = null;

  const err = (status: number, code: string, message: string): Reply => ({ status, body: { error: { code, message } } });

  function route(req: Request): Reply {
    const override = next.get(`${req.method} ${req.path}`);
    if (override) {
      next.delete(`${req.method} ${req.path}`);
      return override;
    }
    if (req.method === 'POST' && req.path === '/admin/api/v1/auth/login') {
      const { username, password } = req.body as { username: string; password: string };
      const account = ACCOUNTS[username];
      if (!account || password !== PASSWORD) return err(401, 'invalid_credentials', 'Wrong username or password.');
      const [display_name, role, token] = account;
      return { status: 200, body: { token, expires_at: '2025-01-01T18:00:00+00:00', user: { username, display_name, role } } };
    }
    const account = Object.values(ACCOUNTS).find(([, , token]) => req.headers.Authorization === `Bearer ${token}`);
    if (!account) return err(401, 'unauthorized', 'Sign in first.');
    const [staff, role] = account;
    const url = new URL(req.path, 'http://x');
    if (req.method === 'POST' && url.pathname === '/admin/api/v1/auth/logout') return { status: 204, body: null };
    const section = sections.get(`${req.method} ${url.pathname}`);
    if (section) return section;
    if (req.method === 'POST' && url.pathname.startsWith('/admin/api/v1/cases/') && role === 'auditor') {
      return err(403, 'forbidden', 'Your role cannot do this.');
    }
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
    if (status === 204) return new Response(null, { status });
    return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
  };

  return {
    fetch,
    requests,
    next,
    sections,
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

/** A stand-in chart library that records what it was asked to draw. */
function fakeCharts() {
  const drawn = new Map<string, ChartSpec>();
  const factory: ChartFactory = (canvas, spec) => {
    const id = canvas.closest('figure')!.id;
    drawn.set(id, spec);
    return { update: (next) => drawn.set(id, next), destroy: () => drawn.delete(id) };
  };
  return { factory, drawn };
}

function mount(server = fakeServer(), storage = new MemoryStorage(), charts = fakeCharts()) {
  document.body.replaceChildren();
  const root = document.createElement('div');
  root.id = 'console-app';
  document.body.append(root);
  const view = new ConsoleView(
    root,
    s,
    {
    signIn: (u, p) => void ctl.signIn(u, p),
    signOut: () => ctl.signOut(),
    showTab: (tab) => ctl.showTab(tab),
    reloadTab: () => void ctl.reloadTab(),
    openConversation: (id) => void ctl.openConversation(id),
    moreConversations: () => void ctl.moreConversations(),
    upload: (file, name, language) => void ctl.upload(file, name, language),
    verifyAudit: () => void ctl.verifyAudit(),
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
    },
    charts.factory,
  );
  const ctl: ConsoleController = new ConsoleController({
    view,
    storage,
    strings: s,
    login: (username, password) => login(username, password, server.fetch),
    makeApi: (creds) => new ConsoleApi(creds, server.fetch),
  });
  ctl.start();
  const $ = <T extends HTMLElement = HTMLElement>(selector: string) => {
    const node = document.querySelector<T>(selector);
    if (!node) throw new Error(`${selector} not found`);
    return node;
  };
  return { ctl, server, storage, root, $, charts };
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

async function signIn(t: ReturnType<typeof mount>, username = 'dana', password = PASSWORD) {
  type(t.$<HTMLInputElement>('#username'), username);
  type(t.$<HTMLInputElement>('#password'), password);
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
    expect(visible($('#console-tabs'))).toBe(false);
    expect($<HTMLInputElement>('#password').type).toBe('password');
    expect($<HTMLInputElement>('#password').autocomplete).toBe('current-password');
    expect(document.querySelector('label[for="username"]')?.textContent).toBe('Username');
    expect(document.querySelector('label[for="password"]')?.textContent).toBe('Password');
    expect($('#error').getAttribute('role')).toBe('alert');
    expect($('#notice').getAttribute('aria-live')).toBe('polite');
    expect(document.activeElement).toBe($('#username'));
  });

  it('signs in, lists cases with text badges, and signs out', async () => {
    const t = mount();
    t.server.add(wireCase({ id: 'c1', priority: 'immediate', reason: 'emergency', channel: 'sms', overdue: true, created_at: '2025-01-01T10:08:00Z' }));
    t.server.add(wireCase({ id: 'c2', priority: 'normal', reason: 'request', status: 'claimed', claimed_by: 'Sam K., MD' }));
    await signIn(t);
    expect(t.server.requests[0]?.path).toBe('/admin/api/v1/auth/login');
    expect(t.server.requests[1]?.headers).toMatchObject({ Authorization: `Bearer ${TOKEN}` });
    expect(visible(t.$('#signin-form'))).toBe(false);
    expect(visible(t.$('#case-list'))).toBe(true);
    expect(t.$<HTMLInputElement>('#password').value).toBe('');
    expect(t.$('#signed-in-as').textContent).toBe(`Signed in as ${ME} (staff)`);

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

  it('keeps the sign-in form with a message for a wrong password', async () => {
    const t = mount();
    await signIn(t, 'dana', 'nope');
    expect(visible(t.$('#signin-form'))).toBe(true);
    expect(t.$('#error').textContent).toBe(s.errInvalidCredentials);
    expect(t.$<HTMLInputElement>('#username').value).toBe('dana');
    expect(t.$<HTMLInputElement>('#password').value).toBe('');
    expect(document.activeElement).toBe(t.$('#password'));
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

  it('goes back to sign-in when the session stops working', async () => {
    const storage = new MemoryStorage();
    saveCredentials(storage, { token: 'revoked', username: 'dana', displayName: ME, role: 'staff', expiresAt: null });
    const t = mount(fakeServer(), storage);
    expect(visible(t.$('#console-main'))).toBe(true);
    await flush();
    expect(visible(t.$('#signin-form'))).toBe(true);
    expect(t.$('#error').textContent).toBe(s.errUnauthorized);
    expect(t.$<HTMLInputElement>('#username').value).toBe('dana');
    expect(document.activeElement).toBe(t.$('#password'));
  });

  it('shows an auditor cases without any way to act on them', async () => {
    const t = mount();
    t.server.add(wireCase({ id: 'c1' }), [wireMessage({ id: 'm1', seq: 1 })]);
    await signIn(t, 'lee');
    expect(t.root.dataset.role).toBe('auditor');
    expect(visible(t.$('#read-only'))).toBe(true);
    await open(t, 'c1');
    expect(t.$('#transcript').textContent).toContain('text m1');
    for (const id of ['#claim', '#handback', '#resolve', '#reply-text', '#reply-send']) expect(visible(t.$(id))).toBe(false);
    const tabs = [...document.querySelectorAll<HTMLButtonElement>('#console-tabs button')].filter(visible);
    expect(tabs.map((b) => b.dataset.tab)).toEqual(['cases', 'conversations', 'dashboard', 'audit']);
    expect(t.server.requests.filter((r) => r.method === 'POST' && r.path.includes('/cases/'))).toEqual([]);
  });

  it('draws the dashboard from the server figures, with the same numbers as tables', async () => {
    const t = mount();
    t.server.sections.set('GET /admin/api/v1/dashboard', {
      status: 200,
      body: {
        days: 7,
        messages_per_channel: { web: 3, sms: 1, voice: 0, api: 0 },
        messages_per_day: [
          { day: '2024-12-31', channel: 'web', count: 2 },
          { day: '2025-01-01', channel: 'web', count: 1 },
          { day: '2025-01-01', channel: 'sms', count: 1 },
        ],
        escalations: { total: 3, open: 1, claimed_in_time: 1, missed_deadline: 1 },
        triage_mix: { emergency: 1, urgent: 0, routine: 2, self_care: 0 },
        latency_ms: { p50: 840, p95: 2400, samples: 4 },
      },
    });
    await signIn(t, 'lee');
    t.$('#tab-dashboard').click();
    await flush();
    expect(visible(t.$('#section-dashboard'))).toBe(true);
    expect(visible(t.$('#section-cases'))).toBe(false);
    expect(t.$('#tab-dashboard').getAttribute('aria-current')).toBe('page');
    const messages = t.charts.drawn.get('chart-messages')!;
    expect(messages.kind).toBe('stacked-bar');
    expect(messages.labels).toEqual(['2024-12-26', '2024-12-27', '2024-12-28', '2024-12-29', '2024-12-30', '2024-12-31', '2025-01-01']);
    expect(messages.series.find((line) => line.label === 'Web chat')?.values).toEqual([0, 0, 0, 0, 0, 2, 1]);
    expect(t.$('#chart-messages').dataset.total).toBe('4');
    expect(t.charts.drawn.get('chart-escalations')?.series[0]?.values).toEqual([1, 1]);
    expect(t.charts.drawn.get('chart-triage')?.series[0]?.values).toEqual([1, 0, 2, 0]);
    expect(t.charts.drawn.get('chart-latency')?.series[0]?.values).toEqual([840, 2400]);
    expect(t.$('#chart-latency').textContent).toContain('2.4 s');
    expect(t.$('#chart-escalations').textContent).toContain('Missed the deadline1');
    expect(t.$('#chart-messages canvas').getAttribute('role')).toBe('img');
    // Signing out takes the figures away too.
    t.$('#sign-out').click();
    expect(t.charts.drawn.size).toBe(0);
  });

  it('lists conversations and shows a transcript as text only', async () => {
    const t = mount();
    const conversation = {
      id: 'conv-7',
      channel: 'sms',
      language: 'es',
      mode: 'bot',
      safety_level: 'crisis',
      started_at: '2025-01-01T09:00:00Z',
      last_message_at: '2025-01-01T10:00:00Z',
      message_count: 2,
    };
    t.server.sections.set('GET /admin/api/v1/conversations', { status: 200, body: { conversations: [conversation], next_before: null } });
    t.server.sections.set('GET /admin/api/v1/conversations/conv-7/messages', {
      status: 200,
      body: {
        conversation_id: 'conv-7',
        needs_follow_up: false,
        messages: [
          { ...wireMessage({ id: 'a', seq: 1, text: hostile }), channel: 'sms' },
          { ...wireMessage({ id: 'b', seq: 2, direction: 'outbound', sender: 'bot', text: 'Llame al 911.' }), channel: 'sms' },
        ],
      },
    });
    await signIn(t, 'lee');
    t.$('#tab-conversations').click();
    await flush();
    const row = t.$('[data-conversation-id="conv-7"]');
    expect(row.textContent).toContain('SMS');
    expect(row.textContent).toContain('2 message(s)');
    expect(row.textContent).toContain('Safety: crisis');
    expect(visible(t.$('#conversations-more'))).toBe(false);
    row.click();
    await flush();
    const log = t.$('#conversation-transcript');
    expect(log.dataset.loaded).toBe('true');
    expect([...log.querySelectorAll<HTMLElement>('[data-message-id]')].map((m) => m.dataset.sender)).toEqual(['patient', 'bot']);
    expect(log.querySelector('img, script')).toBeNull();
    expect(log.textContent).toContain('<img src=x onerror="alert(1)">');
    expect(log.textContent).not.toContain('\u202E');
  });

  it('offers the upload form to admins only and lists ingestion jobs', async () => {
    const job = {
      id: 'j1',
      filename: 'flu.md',
      size_bytes: 4096,
      language: 'en',
      status: 'done',
      error: null,
      created_at: '2025-01-01T09:00:00Z',
      finished_at: '2025-01-01T09:01:00Z',
    };
    const staff = mount();
    staff.server.sections.set('GET /admin/api/v1/kb/jobs', { status: 200, body: { jobs: [job] } });
    await signIn(staff, 'dana');
    staff.$('#tab-kb').click();
    await flush();
    expect(staff.$('#kb-jobs').textContent).toContain('flu.md');
    expect(visible(staff.$('#kb-upload'))).toBe(false);
    expect(visible(staff.$('#tab-audit'))).toBe(false);

    const admin = mount();
    admin.server.sections.set('GET /admin/api/v1/kb/jobs', { status: 200, body: { jobs: [] } });
    await signIn(admin, 'root');
    admin.$('#tab-kb').click();
    await flush();
    expect(visible(admin.$('#kb-upload'))).toBe(true);
    expect(admin.$('#kb-status').textContent).toBe(s.kbEmpty);
  });

  it('says when the audit log is not available, and shows the chain verdict when it is', async () => {
    const t = mount();
    t.server.sections.set('GET /admin/api/v1/audit', { status: 404, body: { detail: 'Not Found' } });
    await signIn(t, 'lee');
    t.$('#tab-audit').click();
    await flush();
    expect(t.$('#audit-status').textContent).toBe(s.auditUnavailable);
    expect(t.$('#error').textContent).toBe('');
    expect(t.$<HTMLButtonElement>('#audit-verify').disabled).toBe(true);

    t.server.sections.set('GET /admin/api/v1/audit', {
      status: 200,
      body: {
        events: [{ id: 5, at: '2025-01-01T09:00:00Z', actor: 'user:lee', action: 'patient_data.read', patient_id: null, conversation_id: 'conv-7', detail: {}, hash: 'ab' }],
        next_before_id: null,
      },
    });
    t.server.sections.set('GET /admin/api/v1/audit/verify', { status: 200, body: { ok: true, checked: 5, first_bad_id: null } });
    t.$('#audit-refresh').click();
    await flush();
    expect(t.$('#audit-events').textContent).toContain('patient_data.read');
    t.$('#audit-verify').click();
    await flush();
    expect(t.$('#audit-verdict').textContent).toBe('The audit chain is intact: 5 event(s) checked.');
  });
});

function format1(template: string): string {
  return template.replace('{n}', '1');
}
