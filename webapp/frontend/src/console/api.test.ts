import { describe, expect, it } from 'vitest';
import {
  ConsoleApi as CaseApi,
  login,
  parseAuditPage,
  parseAuditVerdict,
  parseCase,
  parseCaseDetail,
  parseCaseEnvelope,
  parseCaseList,
  parseConversationPage,
  parseDashboard,
  parseError,
  parseKbJobs,
  parseLogin,
  parseTranscript,
  parseMessage,
  parseReplyResult,
  type FetchLike,
} from './api';
import { wireCase, wireMessage } from './testUtil';

describe('parseCase', () => {
  it('accepts a case that matches the contract', () => {
    const c = parseCase(wireCase());
    expect(c).toEqual(wireCase());
  });

  it('turns numeric ids into strings', () => {
    const c = parseCase(wireCase({ id: 42, conversation_id: 7 }));
    expect(c).toMatchObject({ id: '42', conversation_id: '7' });
  });

  it('accepts a claimed case without triage or due time', () => {
    const c = parseCase(
      wireCase({
        status: 'claimed',
        claimed_by: 'Dana R., RN',
        claimed_at: '2025-01-01T10:05:00+00:00',
        triage: null,
        due_at: null,
        rule_ids: [],
      }),
    );
    expect(c).toMatchObject({ status: 'claimed', claimed_by: 'Dana R., RN', triage: null, due_at: null });
  });

  it('reads a triage that reached no disposition as an empty one', () => {
    expect(parseCase(wireCase({ triage: { disposition: null, reasons: ['unclear'] } }))?.triage).toEqual({
      disposition: '',
      reasons: ['unclear'],
    });
  });

  it('reads timestamps without a zone as UTC', () => {
    const c = parseCase(wireCase({ created_at: '2025-01-01T10:00:00.123456', due_at: '2025-01-01T10:15:00+01:00' }));
    expect(c?.created_at).toBe('2025-01-01T10:00:00.123456Z');
    expect(c?.due_at).toBe('2025-01-01T10:15:00+01:00');
    expect(parseMessage(wireMessage({ id: 'm', seq: 1, created_at: '2025-01-01T10:00:00' }))?.created_at).toBe(
      '2025-01-01T10:00:00Z',
    );
  });

  it('ignores fields it does not know', () => {
    expect(parseCase(wireCase({ callback_requested: true, feedback: null }))).toEqual(wireCase());
  });

  it.each([
    ['not an object', null],
    ['an array', [wireCase()]],
    ['missing id', wireCase({ id: undefined })],
    ['empty id', wireCase({ id: '' })],
    ['fractional id', wireCase({ id: 1.5 })],
    ['object id', wireCase({ id: { $oid: 'x' } })],
    ['missing conversation id', wireCase({ conversation_id: null })],
    ['unknown priority', wireCase({ priority: 'urgent' })],
    ['priority in capitals', wireCase({ priority: 'HIGH' })],
    ['unknown reason', wireCase({ reason: 'bored' })],
    ['unknown status', wireCase({ status: 'closed' })],
    ['unknown channel', wireCase({ channel: 'fax' })],
    ['empty language', wireCase({ language: '' })],
    ['numeric language', wireCase({ language: 1 })],
    ['missing created_at', wireCase({ created_at: undefined })],
    ['unreadable created_at', wireCase({ created_at: 'yesterday' })],
    ['unreadable due_at', wireCase({ due_at: 'soon' })],
    ['missing due_at', wireCase({ due_at: undefined })],
    ['overdue as a string', wireCase({ overdue: 'false' })],
    ['claimed_by as a number', wireCase({ claimed_by: 3 })],
    ['unreadable claimed_at', wireCase({ claimed_at: 12 })],
    ['triage without disposition', wireCase({ triage: { reasons: [] } })],
    ['triage with a numeric disposition', wireCase({ triage: { disposition: 3, reasons: [] } })],
    ['triage reasons not strings', wireCase({ triage: { disposition: 'x', reasons: [1] } })],
    ['triage as a string', wireCase({ triage: 'urgent' })],
    ['missing summaries', wireCase({ summary_clinician: undefined })],
    ['summary as markup object', wireCase({ summary_patient: { html: '<b>x</b>' } })],
    ['rule_ids not an array', wireCase({ rule_ids: 'fever' })],
    ['rule_ids with a number', wireCase({ rule_ids: ['a', 2] })],
  ])('rejects %s', (_label, input) => {
    expect(parseCase(input)).toBeNull();
  });
});

describe('parseMessage', () => {
  it('accepts a message that matches the contract', () => {
    expect(parseMessage(wireMessage({ id: 'm1', seq: 1 }))).toEqual(wireMessage({ id: 'm1', seq: 1 }));
    // The server adds buttons, client_id and channel: ignored.
    expect(parseMessage(wireMessage({ id: 'm1', seq: 1, buttons: [], client_id: null, channel: 'web' }))).toEqual(
      wireMessage({ id: 'm1', seq: 1 }),
    );
    expect(parseMessage(wireMessage({ id: 9, seq: 2 }))?.id).toBe('9');
  });

  it.each([
    ['not an object', 'hello'],
    ['missing id', wireMessage({ id: '', seq: 1 })],
    ['seq as a string', wireMessage({ id: 'm', seq: '1' })],
    ['seq NaN', wireMessage({ id: 'm', seq: Number.NaN })],
    ['unknown sender', wireMessage({ id: 'm', seq: 1, sender: 'doctor' })],
    ['unknown direction', wireMessage({ id: 'm', seq: 1, direction: 'sideways' })],
    ['text not a string', wireMessage({ id: 'm', seq: 1, text: null })],
    ['unreadable created_at', wireMessage({ id: 'm', seq: 1, created_at: 'now' })],
    ['missing status', wireMessage({ id: 'm', seq: 1, status: undefined })],
  ])('rejects %s', (_label, input) => {
    expect(parseMessage(input)).toBeNull();
  });
});

describe('parseCaseList', () => {
  it('keeps the server order and counts what it could not read', () => {
    const list = parseCaseList({
      cases: [
        wireCase({ id: 'a', priority: 'immediate' }),
        wireCase({ id: 'b', priority: 'bogus' }),
        'garbage',
        wireCase({ id: 'c', priority: 'normal' }),
        wireCase({ id: 'a' }),
      ],
    });
    expect(list?.cases.map((c) => c.id)).toEqual(['a', 'c']);
    expect(list?.skipped).toBe(3);
  });

  it.each([[null], [{}], [{ cases: 'none' }], [{ cases: { a: 1 } }], [[]]])('rejects %j', (input) => {
    expect(parseCaseList(input)).toBeNull();
  });
});

describe('parseCaseDetail', () => {
  it('orders messages by seq and counts bad or repeated ones', () => {
    const detail = parseCaseDetail({
      case: wireCase(),
      messages: [
        wireMessage({ id: 'm2', seq: 2 }),
        wireMessage({ id: 'm1', seq: 1 }),
        wireMessage({ id: 'bad', seq: 3, sender: 'hacker' }),
        wireMessage({ id: 'm1', seq: 1 }),
      ],
    });
    expect(detail?.messages.map((m) => m.id)).toEqual(['m1', 'm2']);
    expect(detail?.skippedMessages).toBe(2);
  });

  it('rejects a detail with a malformed case or no message list', () => {
    expect(parseCaseDetail({ case: wireCase({ status: '??' }), messages: [] })).toBeNull();
    expect(parseCaseDetail({ case: wireCase() })).toBeNull();
    expect(parseCaseDetail({ messages: [] })).toBeNull();
  });
});

describe('parseReplyResult / parseCaseEnvelope / parseError', () => {
  it('reads a reply result', () => {
    expect(
      parseReplyResult({ message: wireMessage({ id: 'r', seq: 5 }), delivery: 'not_sent', notice: 'Opted out of SMS.' }),
    ).toEqual({ message: wireMessage({ id: 'r', seq: 5 }), delivery: 'not_sent', notice: 'Opted out of SMS.' });
  });

  it('reports an unreadable reply result as delivery unknown (the reply was accepted)', () => {
    expect(parseReplyResult('ok')).toEqual({ message: null, delivery: 'unknown', notice: null });
    expect(parseReplyResult({ message: {}, delivery: 'teleported', notice: 3 })).toEqual({
      message: null,
      delivery: 'unknown',
      notice: null,
    });
  });

  it('reads {case} envelopes', () => {
    expect(parseCaseEnvelope({ case: wireCase() })?.id).toBe('case-1');
    expect(parseCaseEnvelope(wireCase())).toBeNull();
  });

  it('reads the error envelope, or falls back to the status', () => {
    expect(parseError(409, { error: { code: 'conflict', message: 'claimed by someone else' } })).toEqual({
      ok: false,
      status: 409,
      code: 'conflict',
      message: 'claimed by someone else',
    });
    expect(parseError(502, undefined)).toEqual({ ok: false, status: 502, code: 'http_502', message: '' });
    expect(parseError(422, { detail: [{ msg: 'x' }] })).toMatchObject({ code: 'http_422', message: '' });
    expect(parseError(400, { error: 'bad' })).toMatchObject({ code: 'http_400', message: '' });
  });
});

interface Call {
  url: string;
  init: RequestInit;
}

function fakeFetch(respond: (call: Call) => Response | Promise<Response>) {
  const calls: Call[] = [];
  const fn: FetchLike = async (url, init) => {
    const call = { url, init };
    calls.push(call);
    return respond(call);
  };
  return { fn, calls };
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

const creds = { token: 'secret-token' };

describe('CaseApi', () => {
  it('sends the session token as a bearer header, and nothing else that identifies', async () => {
    const { fn, calls } = fakeFetch(() => json(200, { cases: [wireCase()] }));
    const api = new CaseApi(creds, fn);
    const result = await api.listCases('active');
    expect(result).toEqual({ ok: true, value: { cases: [wireCase()], skipped: 0 } });
    expect(calls[0]?.url).toBe('/admin/api/v1/cases?status=active');
    expect(calls[0]?.init.method).toBe('GET');
    expect(calls[0]?.init.headers).toEqual({ Accept: 'application/json', Authorization: 'Bearer secret-token' });
    expect(calls[0]?.init.body).toBeUndefined();
  });

  it('builds the action URLs (ids escaped) and posts the reply as JSON', async () => {
    const { fn, calls } = fakeFetch(({ url }) =>
      url.endsWith('/reply')
        ? json(200, { message: wireMessage({ id: 'r1', seq: 9, sender: 'staff' }), delivery: 'sent', notice: null })
        : url.includes('/cases/') && !/(claim|handback|resolve)$/.test(url)
          ? json(200, { case: wireCase(), messages: [] })
          : json(200, { case: wireCase() }),
    );
    const api = new CaseApi(creds, fn);
    await api.listCases('all');
    await api.getCase('a/b?c');
    await api.claim('7');
    await api.handback('7');
    await api.resolve('7');
    const reply = await api.reply('7', 'Please call 911 now.');
    expect(calls.map((c) => `${c.init.method} ${c.url}`)).toEqual([
      'GET /admin/api/v1/cases?status=all',
      'GET /admin/api/v1/cases/a%2Fb%3Fc',
      'POST /admin/api/v1/cases/7/claim',
      'POST /admin/api/v1/cases/7/handback',
      'POST /admin/api/v1/cases/7/resolve',
      'POST /admin/api/v1/cases/7/reply',
    ]);
    expect(calls[5]?.init.body).toBe('{"text":"Please call 911 now."}');
    expect(calls[5]?.init.headers).toMatchObject({ 'Content-Type': 'application/json' });
    expect(reply).toMatchObject({ ok: true, value: { delivery: 'sent', message: { id: 'r1' } } });
  });

  it('returns the server error message (409) and the status', async () => {
    const { fn } = fakeFetch(() => json(409, { error: { code: 'already_claimed', message: 'claimed by someone else' } }));
    expect(await new CaseApi(creds, fn).claim('1')).toEqual({
      ok: false,
      status: 409,
      code: 'already_claimed',
      message: 'claimed by someone else',
    });
  });

  it('reports 401, network failures and non-JSON answers', async () => {
    const unauthorized = fakeFetch(() => json(401, { error: { code: 'unauthorized', message: 'no' } }));
    expect(await new CaseApi(creds, unauthorized.fn).listCases('active')).toMatchObject({ ok: false, status: 401 });
    const offline = fakeFetch(() => Promise.reject(new TypeError('Failed to fetch')));
    expect(await new CaseApi(creds, offline.fn).listCases('active')).toEqual({
      ok: false,
      status: 0,
      code: 'network',
      message: '',
    });
    const proxy = fakeFetch(() => new Response('<html>Bad gateway</html>', { status: 502 }));
    expect(await new CaseApi(creds, proxy.fn).listCases('active')).toEqual({
      ok: false,
      status: 502,
      code: 'http_502',
      message: '',
    });
  });

  it('refuses a 2xx answer it cannot read, except for a reply (already accepted)', async () => {
    const garbage = fakeFetch(() => new Response('not json', { status: 200 }));
    expect(await new CaseApi(creds, garbage.fn).listCases('active')).toMatchObject({ ok: false, code: 'bad_response' });
    expect(await new CaseApi(creds, garbage.fn).getCase('1')).toMatchObject({ ok: false, code: 'bad_response' });
    expect(await new CaseApi(creds, garbage.fn).claim('1')).toMatchObject({ ok: false, code: 'bad_response' });
    expect(await new CaseApi(creds, garbage.fn).reply('1', 'hi')).toEqual({
      ok: true,
      value: { message: null, delivery: 'unknown', notice: null },
    });
  });
});

describe('sign-in', () => {
  const session = {
    token: 'jwt.abc.def',
    expires_at: '2026-12-08T06:00:00+00:00',
    user: { username: 'dana', display_name: 'Dana Reyes', role: 'staff' },
  };

  it('posts the username and password as JSON and reads the session', async () => {
    const { fn, calls } = fakeFetch(() => json(200, session));
    const result = await login('dana', 'correct horse battery', fn);
    expect(calls[0]?.url).toBe('/admin/api/v1/auth/login');
    expect(calls[0]?.init.method).toBe('POST');
    expect(calls[0]?.init.body).toBe('{"username":"dana","password":"correct horse battery"}');
    expect((calls[0]?.init.headers as Record<string, string>).Authorization).toBeUndefined();
    expect(result).toEqual({
      ok: true,
      value: { token: 'jwt.abc.def', expiresAt: '2026-12-08T06:00:00+00:00', username: 'dana', displayName: 'Dana Reyes', role: 'staff' },
    });
  });

  it('gives the wait from Retry-After when sign-in is throttled', async () => {
    const { fn } = fakeFetch(
      () =>
        new Response(JSON.stringify({ error: { code: 'too_many_attempts', message: 'Wait.' } }), {
          status: 429,
          headers: { 'Retry-After': '120' },
        }),
    );
    expect(await login('dana', 'x', fn)).toEqual({ ok: false, status: 429, code: 'too_many_attempts', message: 'Wait.', retryAfterS: 120 });
  });

  it('refuses sessions with an unknown role or a token that cannot travel in a header', () => {
    expect(parseLogin({ ...session, user: { ...session.user, role: 'root' } })).toBeNull();
    expect(parseLogin({ ...session, token: 'two words' })).toBeNull();
    expect(parseLogin({ ...session, user: { username: 'lee', role: 'auditor' } })).toMatchObject({ displayName: 'lee' });
  });

  it('logs out with the bearer token and accepts an empty 204', async () => {
    const { fn, calls } = fakeFetch(() => new Response(null, { status: 204 }));
    expect(await new CaseApi(creds, fn).logout()).toEqual({ ok: true, value: true });
    expect(calls[0]?.url).toBe('/admin/api/v1/auth/logout');
    expect(calls[0]?.init.headers).toMatchObject({ Authorization: 'Bearer secret-token' });
  });
});

describe('console sections', () => {
  const conversation = {
    id: 'c1',
    channel: 'sms',
    language: 'es',
    mode: 'bot',
    safety_level: 'none',
    started_at: '2026-12-01T10:00:00+00:00',
    last_message_at: '2026-12-01T10:05:00+00:00',
    message_count: 4,
  };

  it('reads a page of conversations and asks for the next one with next_before', async () => {
    const { fn, calls } = fakeFetch(() =>
      json(200, { conversations: [conversation, { ...conversation, id: 'bad', channel: 'fax' }], next_before: conversation.last_message_at }),
    );
    const api = new CaseApi(creds, fn);
    const first = await api.listConversations(null);
    expect(first).toEqual({ ok: true, value: { conversations: [conversation], skipped: 1, nextBefore: '2026-12-01T10:05:00+00:00' } });
    await api.listConversations('2026-12-01T10:05:00+00:00');
    expect(calls.map((c) => c.url)).toEqual([
      '/admin/api/v1/conversations?limit=50',
      '/admin/api/v1/conversations?limit=50&before=2026-12-01T10%3A05%3A00%2B00%3A00',
    ]);
    expect(parseConversationPage({ conversations: [], next_before: null })).toEqual({ conversations: [], skipped: 0, nextBefore: null });
    expect(parseConversationPage({ conversations: [], next_before: 'yesterday' })).toBeNull();
  });

  it('reads a transcript in order, with each message channel', () => {
    const t = parseTranscript({
      conversation_id: 'c1',
      needs_follow_up: false,
      messages: [
        { ...wireMessage({ id: 'b', seq: 2, direction: 'outbound', sender: 'bot' }), channel: 'sms', delivery: [], media: [] },
        { ...wireMessage({ id: 'a', seq: 1 }), channel: 'sms' },
        { ...wireMessage({ id: 'x', seq: 3 }) },
      ],
    });
    expect(t?.messages.map((m) => `${m.id}:${m.channel}`)).toEqual(['a:sms', 'b:sms']);
    expect(t?.skippedMessages).toBe(1);
  });

  it('reads knowledge-base jobs, and uploads a file as multipart form data', async () => {
    const job = {
      id: 'j1',
      filename: 'flu.md',
      size_bytes: 2048,
      sha256: 'ab',
      language: 'en',
      status: 'queued',
      report: {},
      error: null,
      created_at: '2026-12-01T10:00:00+00:00',
      finished_at: null,
      url: '/admin/api/v1/kb/jobs/j1',
    };
    expect(parseKbJobs({ jobs: [job, { id: 'j2' }] })).toMatchObject({ items: [{ id: 'j1', filename: 'flu.md' }], skipped: 1 });
    const { fn, calls } = fakeFetch(() => json(202, job));
    const result = await new CaseApi(creds, fn).uploadDocument(new Blob(['# Flu']), 'flu.md', 'en');
    expect(result).toMatchObject({ ok: true, value: { id: 'j1' } });
    const body = calls[0]?.init.body;
    expect(body).toBeInstanceOf(FormData);
    expect((body as FormData).get('language')).toBe('en');
    expect(((body as FormData).get('file') as File).name).toBe('flu.md');
    expect((calls[0]?.init.headers as Record<string, string>)['Content-Type']).toBeUndefined();
  });

  const dashboard = {
    days: 7,
    messages_per_channel: { web: 3, sms: 1, voice: 0, api: 0 },
    messages_per_day: [
      { day: '2026-12-01', channel: 'web', count: 2 },
      { day: '2026-12-02', channel: 'web', count: 1 },
      { day: '2026-12-02', channel: 'sms', count: 1 },
    ],
    escalations: { total: 3, open: 1, claimed_in_time: 1, missed_deadline: 1 },
    triage_mix: { emergency: 1, urgent: 0, routine: 2, self_care: 0 },
    latency_ms: { p50: 840.5, p95: null, samples: 4 },
  };

  it('reads the dashboard figures', async () => {
    const { fn, calls } = fakeFetch(() => json(200, dashboard));
    const result = await new CaseApi(creds, fn).dashboard(7);
    expect(calls[0]?.url).toBe('/admin/api/v1/dashboard?days=7');
    expect(result).toEqual({
      ok: true,
      value: {
        days: 7,
        messagesPerChannel: { web: 3, sms: 1, voice: 0, api: 0 },
        messagesPerDay: dashboard.messages_per_day,
        escalations: { total: 3, open: 1, claimedInTime: 1, missedDeadline: 1 },
        triageMix: { emergency: 1, urgent: 0, routine: 2, self_care: 0 },
        latency: { p50: 840.5, p95: null, samples: 4 },
      },
    });
  });

  it.each([
    ['a negative count', { ...dashboard, escalations: { ...dashboard.escalations, open: -1 } }],
    ['a day that is not a date', { ...dashboard, messages_per_day: [{ day: 'Monday', channel: 'web', count: 1 }] }],
    ['latency as text', { ...dashboard, latency_ms: { p50: '1s', p95: null, samples: 1 } }],
    ['no escalations', { ...dashboard, escalations: undefined }],
  ])('refuses a dashboard with %s', (_, body) => {
    expect(parseDashboard(body)).toBeNull();
  });

  it('reads audit pages and the chain verdict', async () => {
    const page = parseAuditPage({
      events: [
        { id: 12, at: '2026-12-01T10:00:00Z', actor: 'user:dana', action: 'patient_data.read', patient_id: 'p1', conversation_id: 'c1', detail: { messages: 4 }, hash: 'ff' },
        { id: 11, at: 'never', actor: 'x', action: 'y' },
      ],
      next_before_id: 12,
    });
    expect(page).toEqual({
      events: [
        { id: '12', at: '2026-12-01T10:00:00Z', actor: 'user:dana', action: 'patient_data.read', patient_id: 'p1', conversation_id: 'c1', detail: '{"messages":4}', hash: 'ff' },
      ],
      skipped: 1,
      nextBeforeId: '12',
    });
    expect(parseAuditVerdict({ ok: false, checked: 40, first_bad_id: 17 })).toEqual({ ok: false, checked: 40, firstBadId: '17' });
    const { fn, calls } = fakeFetch(() => json(404, { detail: 'Not Found' }));
    const api = new CaseApi(creds, fn);
    expect(await api.audit(null)).toMatchObject({ ok: false, status: 404 });
    await api.audit('12');
    await api.verifyAudit();
    expect(calls.map((c) => c.url)).toEqual([
      '/admin/api/v1/audit?limit=100',
      '/admin/api/v1/audit?limit=100&before_id=12',
      '/admin/api/v1/audit/verify',
    ]);
  });
});
