import { describe, expect, it } from 'vitest';
import { MessageStore } from './messageStore';
import { msg } from './testUtil';

describe('MessageStore', () => {
  it('orders by seq regardless of arrival order', () => {
    const store = new MessageStore();
    store.add(msg({ id: 'c', seq: 3 }));
    store.add(msg({ id: 'a', seq: 1 }));
    store.add(msg({ id: 'b', seq: 2 }));
    expect(store.list().map((m) => m.id)).toEqual(['a', 'b', 'c']);
  });

  it('ignores a message whose id is already known', () => {
    const store = new MessageStore();
    expect(store.add(msg({ id: 'a', seq: 1, text: 'first' }))).toBe(true);
    expect(store.add(msg({ id: 'a', seq: 1, text: 'again' }))).toBe(false);
    expect(store.size).toBe(1);
    expect(store.list()[0]?.text).toBe('first');
  });

  it('reset replaces everything and deduplicates by id', () => {
    const store = new MessageStore();
    store.add(msg({ id: 'old', seq: 9 }));
    store.reset([msg({ id: 'x', seq: 2 }), msg({ id: 'y', seq: 1 }), msg({ id: 'x', seq: 2, text: 'dup' })]);
    expect(store.has('old')).toBe(false);
    expect(store.list().map((m) => m.id)).toEqual(['y', 'x']);
    expect(store.list()[1]?.text).toBe('text x');
  });

  it('breaks seq ties by id so the order is stable', () => {
    const store = new MessageStore();
    store.reset([msg({ id: 'b', seq: 1 }), msg({ id: 'a', seq: 1 })]);
    expect(store.list().map((m) => m.id)).toEqual(['a', 'b']);
  });

  it('collects client ids and can be cleared', () => {
    const store = new MessageStore();
    store.add(msg({ id: 'a', seq: 1, sender: 'patient', client_id: 'c1' }));
    store.add(msg({ id: 'b', seq: 2 }));
    expect([...store.clientIds()]).toEqual(['c1']);
    store.clear();
    expect(store.size).toBe(0);
    expect(store.list()).toEqual([]);
  });
});
