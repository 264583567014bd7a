import { describe, expect, it } from 'vitest';
import {
  CaseApi,
  parseCase,
  parseCaseDetail,
  parseCaseEnvelope,
  parseCaseList,
  parseError,
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

const creds = { token: 'secret-token', staffName: 'Dana R., RN' };

describe('CaseApi', () => {
  it('sends the admin token and the staff name with every request', async () => {
    const { fn, calls } = fakeFetch(() => json(200, { cases: [wireCase()] }));
    const api = new CaseApi(creds, fn);
    const result = await api.listCases('active');
    expect(result).toEqual({ ok: true, value: { cases: [wireCase()], skipped: 0 } });
    expect(calls[0]?.url).toBe('/admin/api/v1/cases?status=active');
    expect(calls[0]?.init.method).toBe('GET');
    expect(calls[0]?.init.headers).toMatchObject({
      Authorization: 'Bearer secret-token',
      'X-Staff-Name': 'Dana R., RN',
    });
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
