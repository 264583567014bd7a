import { describe, expect, it } from 'vitest';
import { PendingQueue } from './pendingQueue';
import { MemoryStorage, PENDING_KEY } from './storage';

const entry = (client_id: string, text = `hi ${client_id}`) => ({
  client_id,
  text,
  created_at: '2025-01-01T10:00:00.000Z',
});

describe('PendingQueue', () => {
  it('persists entries in order under clinic.chat.pending', () => {
    const storage = new MemoryStorage();
    const q = new PendingQueue(storage);
    q.add(entry('a'));
    q.add({ ...entry('b'), payload: '/book' });
    expect(JSON.parse(storage.getItem(PENDING_KEY)!)).toHaveLength(2);
    // A new instance (page reload, other tab) sees the same queue.
    expect(new PendingQueue(storage).list()).toEqual([entry('a'), { ...entry('b'), payload: '/book' }]);
  });

  it('does not queue the same client_id twice', () => {
    const q = new PendingQueue(new MemoryStorage());
    q.add(entry('a', 'one'));
    q.add(entry('a', 'two'));
    expect(q.list()).toEqual([entry('a', 'one')]);
  });

  it('removes by client_id and deletes the key when empty', () => {
    const storage = new MemoryStorage();
    const q = new PendingQueue(storage);
    q.add(entry('a'));
    q.add(entry('b'));
    q.add(entry('c'));
    expect(q.remove('b', 'zzz')).toBe(1);
    expect(q.list().map((e) => e.client_id)).toEqual(['a', 'c']);
    expect(q.has('b')).toBe(false);
    expect(q.remove('a', 'c')).toBe(2);
    expect(storage.getItem(PENDING_KEY)).toBeNull();
    expect(q.remove()).toBe(0);
  });

  it('survives corrupt or foreign data in storage', () => {
    const storage = new MemoryStorage();
    const q = new PendingQueue(storage);
    storage.setItem(PENDING_KEY, '{not json');
    expect(q.list()).toEqual([]);
    storage.setItem(PENDING_KEY, JSON.stringify({ client_id: 'x' }));
    expect(q.list()).toEqual([]);
    storage.setItem(
      PENDING_KEY,
      JSON.stringify([entry('ok'), { client_id: 5, text: 'bad' }, null, { ...entry('p'), payload: 7 }, entry('ok')]),
    );
    expect(q.list()).toEqual([entry('ok')]);
    q.add(entry('new'));
    expect(q.list().map((e) => e.client_id)).toEqual(['ok', 'new']);
  });

  it('clear empties the queue', () => {
    const q = new PendingQueue(new MemoryStorage());
    q.add(entry('a'));
    q.clear();
    expect(q.list()).toEqual([]);
  });
});
