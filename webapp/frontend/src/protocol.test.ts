import { describe, expect, it } from 'vitest';
import {
  isRetryable,
  MAX_DRAFT_DELTA,
  parseAck,
  parseDraft,
  parseHistory,
  parseMsg,
  parseNotice,
  parseSession,
  parseTyping,
} from './protocol';

const raw = {
  id: 'm1',
  seq: 4,
  direction: 'outbound',
  sender: 'bot',
  text: 'Hello',
  buttons: [{ title: 'Book', payload: '/book' }],
  created_at: '2025-01-01T10:00:00Z',
  client_id: null,
};

describe('protocol parsers', () => {
  it('accepts a well-formed message unchanged', () => {
    expect(parseMsg(raw)).toEqual(raw);
  });

  it('rejects messages without id, seq or text', () => {
    expect(parseMsg(null)).toBeNull();
    expect(parseMsg({ ...raw, id: '' })).toBeNull();
    expect(parseMsg({ ...raw, seq: '4' })).toBeNull();
    expect(parseMsg({ ...raw, text: 5 })).toBeNull();
  });

  it('normalises optional fields', () => {
    const m = parseMsg({ id: 'x', seq: 1, text: 't', direction: 'inbound', buttons: [{ title: '' }, { title: 'Yes' }, 3] });
    expect(m).toEqual({
      id: 'x',
      seq: 1,
      direction: 'inbound',
      sender: 'patient',
      text: 't',
      buttons: [{ title: 'Yes', payload: 'Yes' }],
      created_at: '',
      client_id: null,
    });
  });

  it('parses session, history, typing and notices defensively', () => {
    expect(parseSession({ token: 't', conversation_id: 'c' })).toEqual({ token: 't', conversation_id: 'c' });
    expect(parseSession({ token: '' })).toBeNull();
    expect(parseHistory({ messages: [raw, { bad: true }] })).toHaveLength(1);
    expect(parseHistory('nope')).toEqual([]);
    expect(parseTyping({ active: true })).toBe(true);
    expect(parseTyping({ active: 'yes' })).toBe(false);
    expect(parseNotice({ code: 'rate_limited', message: 'Slow down' })).toEqual({ code: 'rate_limited', message: 'Slow down' });
    expect(parseNotice(undefined)).toEqual({ code: 'error', message: '' });
  });

  it('parses acks', () => {
    expect(parseAck({ ok: true, message: raw })).toEqual({ ok: true, message: raw });
    expect(parseAck({ ok: false, code: 'too_long', message: 'Too long' })).toEqual({
      ok: false,
      code: 'too_long',
      message: 'Too long',
    });
    expect(parseAck({ ok: true })).toMatchObject({ ok: false, code: 'bad_response' });
    expect(parseAck(undefined)).toMatchObject({ ok: false, code: 'bad_response' });
  });

  it('knows which ack codes are worth retrying', () => {
    expect(isRetryable('rate_limited')).toBe(true);
    expect(isRetryable('server_error')).toBe(true);
    expect(isRetryable('invalid')).toBe(false);
    expect(isRetryable('empty')).toBe(false);
    expect(isRetryable('too_long')).toBe(false);
  });

  it('parses draft pieces and resets', () => {
    expect(parseDraft({ reply_to: 'c1', delta: 'Fever is ' })).toEqual({ reply_to: 'c1', delta: 'Fever is ' });
    expect(parseDraft({ reply_to: 'c1', reset: true })).toEqual({ reply_to: 'c1', reset: true });
    // Unknown extra keys are ignored, like everywhere else in the protocol.
    expect(parseDraft({ reply_to: 'c1', delta: 'x', seq: 3 })).toEqual({ reply_to: 'c1', delta: 'x' });
    expect(parseDraft({ reply_to: 'c1', delta: 'x'.repeat(MAX_DRAFT_DELTA) })).not.toBeNull();
  });

  it('rejects malformed drafts', () => {
    const bad: unknown[] = [
      null,
      'text',
      ['c1', 'x'],
      { delta: 'no reply_to' },
      { reply_to: '', delta: 'x' },
      { reply_to: 5, delta: 'x' },
      { reply_to: 'c'.repeat(65), delta: 'x' },
      { reply_to: 'c1' },
      { reply_to: 'c1', delta: 42 },
      { reply_to: 'c1', delta: null },
      { reply_to: 'c1', delta: ['a'] },
      { reply_to: 'c1', delta: { text: 'a' } },
      { reply_to: 'c1', delta: 'x'.repeat(MAX_DRAFT_DELTA + 1) },
      { reply_to: 'c1', reset: 'true' },
      { reply_to: 'c1', reset: false },
      { reply_to: 'c1', reset: 1 },
      { reply_to: 'c1', delta: 'x', reset: true },
      { reply_to: 'c1', delta: 'x', reset: false },
    ];
    for (const x of bad) expect(parseDraft(x), JSON.stringify(x)).toBeNull();
  });
});
