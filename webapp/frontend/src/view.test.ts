import { describe, expect, it } from 'vitest';
import { buildView } from './view';
import { msg } from './testUtil';

const pending = (client_id: string, created_at = '2025-01-01T10:05:00.000Z') => ({
  client_id,
  text: `pending ${client_id}`,
  created_at,
});

describe('buildView', () => {
  it('lists confirmed messages, then pending ones marked as sending', () => {
    const items = buildView([msg({ id: 'm1', seq: 1 })], [pending('c1')]);
    expect(items.map((i) => [i.key, i.status, i.sender])).toEqual([
      ['m:m1', 'sent', 'bot'],
      ['c:c1', 'sending', 'patient'],
    ]);
    expect(items[1]?.id).toBeNull();
  });

  it('replaces a pending entry by the stored message with the same client_id, keeping its key', () => {
    const before = buildView([], [pending('c1')]);
    const after = buildView([msg({ id: 'm1', seq: 1, sender: 'patient', client_id: 'c1' })], [pending('c1')]);
    expect(after).toHaveLength(1);
    expect(after[0]).toMatchObject({ key: before[0]?.key, id: 'm1', status: 'sent' });
  });

  it('shows failed messages with their error, in typing order with pending ones', () => {
    const items = buildView(
      [],
      [pending('late', '2025-01-01T10:06:00.000Z')],
      [{ ...pending('early', '2025-01-01T10:01:00.000Z'), error: 'Too long' }],
    );
    expect(items.map((i) => [i.clientId, i.status, i.error])).toEqual([
      ['early', 'failed', 'Too long'],
      ['late', 'sending', null],
    ]);
  });

  it('never produces duplicate keys', () => {
    const items = buildView(
      [
        msg({ id: 'a', seq: 1, client_id: 'same' }),
        msg({ id: 'b', seq: 2, client_id: 'same' }),
      ],
      [pending('same'), pending('other'), pending('other')],
    );
    const keys = items.map((i) => i.key);
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys).toEqual(['c:same', 'm:b', 'c:other']);
  });

  it('places a draft right after the message it answers, or last when that is not shown', () => {
    const items = buildView(
      [msg({ id: 'm1', seq: 1, sender: 'patient', client_id: 'c0' })],
      [pending('c1', '2025-01-01T10:05:00.000Z'), pending('c2', '2025-01-01T10:06:00.000Z')],
      [],
      [
        { replyTo: 'elsewhere', text: 'from another tab' },
        { replyTo: 'c1', text: 'Fever is' },
        { replyTo: 'c0', text: 'Earlier' },
      ],
    );
    expect(items.map((i) => [i.key, i.status, i.sender])).toEqual([
      ['c:c0', 'sent', 'patient'],
      ['d:c0', 'draft', 'bot'],
      ['c:c1', 'sending', 'patient'],
      ['d:c1', 'draft', 'bot'],
      ['c:c2', 'sending', 'patient'],
      ['d:elsewhere', 'draft', 'bot'],
    ]);
    expect(items[3]).toMatchObject({ id: null, clientId: null, replyTo: 'c1', text: 'Fever is', buttons: [] });
  });
});

