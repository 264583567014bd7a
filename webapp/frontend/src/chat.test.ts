import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ChatController, type ChatView, type ConnectionStatus } from './chat';
import { strings } from './i18n';
import { PendingQueue } from './pendingQueue';
import type { OutgoingMessage } from './protocol';
import { MemoryStorage, TOKEN_KEY, type KeyValueStorage } from './storage';
import { msg } from './testUtil';
import type { ViewItem } from './view';

interface Sent {
  message: OutgoingMessage;
  resolve(ack: unknown): void;
  reject(err: Error): void;
}

/** A fake socket + page: records what was emitted and rendered, acks on demand. */
function setup(storage: KeyValueStorage = new MemoryStorage()) {
  const sent: Sent[] = [];
  const notices: string[] = [];
  const statuses: ConnectionStatus[] = [];
  let items: readonly ViewItem[] = [];
  let typing = false;
  let connected = false;
  let n = 0;
  const view: ChatView = {
    renderItems: (next) => {
      items = next;
    },
    setStatus: (s) => statuses.push(s),
    setTyping: (a) => {
      typing = a;
    },
    showNotice: (t) => notices.push(t),
  };
  const chat = new ChatController({
    storage,
    view,
    strings: strings('en'),
    newId: () => `cid-${++n}`,
    now: () => new Date(Date.UTC(2025, 0, 1, 10, 0, n)),
    isConnected: () => connected,
    send: (message) =>
      new Promise((resolve, reject) => {
        sent.push({ message, resolve, reject });
      }),
    retryDelaysMs: [1000],
    typingTimeoutMs: 5000,
    draftTimeoutMs: 60000,
  });
  return {
    chat,
    storage,
    sent,
    notices,
    statuses,
    pending: new PendingQueue(storage),
    items: () => items,
    typing: () => typing,
    /**
     * session + history + connect, in the order socket.io-client delivers them (events the
     * server emits during the handshake are dispatched before the `connect` event).
     */
    connect(history: unknown[] = [], token = 'tok-1', connectFirst = false) {
      connected = true;
      if (connectFirst) chat.handleConnect();
      chat.handleSession({ token, conversation_id: `conv-${token}` });
      chat.handleHistory({ messages: history });
      if (!connectFirst) chat.handleConnect();
    },
    disconnect() {
      connected = false;
      chat.handleDisconnect();
    },
  };
}

const stored = (id: string, seq: number, client_id: string, text: string) =>
  msg({ id, seq, client_id, text, sender: 'patient', direction: 'inbound' });

describe('ChatController', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  const flush = async () => {
    await vi.advanceTimersByTimeAsync(0);
  };

  it('saves the session token and renders history', () => {
    const t = setup();
    expect(t.chat.token()).toBeNull();
    t.connect([msg({ id: 'b', seq: 2 }), msg({ id: 'a', seq: 1 }), msg({ id: 'a', seq: 1 })]);
    expect(t.storage.getItem(TOKEN_KEY)).toBe('tok-1');
    expect(t.chat.token()).toBe('tok-1');
    expect(t.chat.currentConversationId).toBe('conv-tok-1');
    expect(t.items().map((i) => i.id)).toEqual(['a', 'b']);
    expect(t.statuses).toEqual(['connected']);
  });

  it('sends a message, shows it as sending, and replaces it with the acked one', async () => {
    const t = setup();
    t.connect();
    expect(t.chat.submit('  Hello  ')).toBe(true);
    expect(t.items()).toMatchObject([{ clientId: 'cid-1', status: 'sending', text: 'Hello' }]);
    expect(t.sent.map((s) => s.message)).toEqual([{ client_id: 'cid-1', text: 'Hello' }]);
    t.sent[0]!.resolve({ ok: true, message: stored('m1', 1, 'cid-1', 'Hello') });
    await flush();
    expect(t.items()).toMatchObject([{ key: 'c:cid-1', id: 'm1', status: 'sent' }]);
    expect(t.pending.list()).toEqual([]);
  });

  it('does not send empty input', () => {
    const t = setup();
    t.connect();
    expect(t.chat.submit('   \n ')).toBe(false);
    expect(t.sent).toEqual([]);
  });

  it('sends button choices with their payload', () => {
    const t = setup();
    t.connect();
    t.chat.choose({ title: 'Book a visit', payload: '/book' });
    expect(t.sent[0]?.message).toEqual({ client_id: 'cid-1', text: 'Book a visit', payload: '/book' });
  });

  it('queues while offline and sends after history, in order, one at a time', async () => {
    const t = setup();
    t.chat.start();
    t.chat.submit('first');
    t.chat.submit('second');
    expect(t.sent).toEqual([]);
    expect(t.items().map((i) => i.status)).toEqual(['sending', 'sending']);

    t.connect();
    expect(t.sent.map((s) => s.message.text)).toEqual(['first']);
    t.sent[0]!.resolve({ ok: true, message: stored('m1', 1, 'cid-1', 'first') });
    await flush();
    expect(t.sent.map((s) => s.message.text)).toEqual(['first', 'second']);
    t.sent[1]!.resolve({ ok: true, message: stored('m2', 2, 'cid-2', 'second') });
    await flush();
    expect(t.items().map((i) => [i.id, i.status])).toEqual([
      ['m1', 'sent'],
      ['m2', 'sent'],
    ]);
  });

  it('waits for history before sending, whichever order connect and history arrive in', async () => {
    for (const connectFirst of [true, false]) {
      const t = setup();
      t.chat.submit('queued');
      t.connect([], 'tok-1', connectFirst);
      expect(t.sent.map((s) => s.message.client_id)).toEqual(['cid-1']);
    }
  });

  it('does not send between a disconnect and the next history', () => {
    const t = setup();
    t.connect();
    t.disconnect();
    t.chat.submit('while offline');
    t.chat.handleConnect();
    expect(t.sent).toEqual([]);
  });

  it('resends an un-acked message with the SAME client_id after reconnect', async () => {
    const t = setup();
    t.connect();
    t.chat.submit('are you there?');
    expect(t.sent).toHaveLength(1);
    t.disconnect();
    t.sent[0]!.reject(new Error('disconnected'));
    await flush();
    expect(t.pending.list().map((p) => p.client_id)).toEqual(['cid-1']);
    expect(t.items()[0]?.status).toBe('sending');

    t.connect();
    expect(t.sent).toHaveLength(2);
    expect(t.sent[1]?.message.client_id).toBe('cid-1');
    // The server already had it: it acks with the stored message; nothing is duplicated.
    t.sent[1]!.resolve({ ok: true, message: stored('m1', 1, 'cid-1', 'are you there?') });
    await flush();
    expect(t.items().map((i) => i.id)).toEqual(['m1']);
  });

  it('survives a reload: pending messages from storage are resent with their client_id', async () => {
    const storage = new MemoryStorage();
    const first = setup(storage);
    first.connect();
    first.chat.submit('typed before the tab closed');
    expect(first.sent).toHaveLength(1); // never acked

    const second = setup(storage);
    second.chat.start();
    expect(second.items()).toMatchObject([{ clientId: 'cid-1', status: 'sending' }]);
    second.connect();
    expect(second.sent[0]?.message).toEqual({ client_id: 'cid-1', text: 'typed before the tab closed' });
  });

  it('drops pending entries that history shows were already stored', () => {
    const t = setup();
    t.chat.submit('hello');
    t.connect([stored('m1', 1, 'cid-1', 'hello')]);
    expect(t.sent).toEqual([]);
    expect(t.pending.list()).toEqual([]);
    expect(t.items().map((i) => [i.id, i.status])).toEqual([['m1', 'sent']]);
  });

  it('replaces a pending entry when the stored copy arrives as a message event (other tab)', () => {
    const t = setup();
    t.connect();
    t.chat.submit('hi');
    t.chat.handleMessage(stored('m1', 1, 'cid-1', 'hi'));
    expect(t.pending.list()).toEqual([]);
    expect(t.items()).toMatchObject([{ id: 'm1', status: 'sent' }]);
  });

  it('appends message events once, by id', () => {
    const t = setup();
    t.connect([msg({ id: 'a', seq: 1 })]);
    t.chat.handleMessage(msg({ id: 'b', seq: 2 }));
    t.chat.handleMessage(msg({ id: 'b', seq: 2 }));
    t.chat.handleMessage(msg({ id: 'a', seq: 1 }));
    t.chat.handleMessage({ garbage: true });
    expect(t.items().map((i) => i.id)).toEqual(['a', 'b']);
  });

  it('shows a final refusal next to the message and stops sending it', async () => {
    const t = setup();
    t.connect();
    t.chat.submit('x'.repeat(10));
    t.chat.submit('next one');
    t.sent[0]!.resolve({ ok: false, code: 'too_long', message: 'Message too long' });
    await flush();
    expect(t.pending.list().map((p) => p.text)).toEqual(['next one']);
    expect(t.items()[0]).toMatchObject({ status: 'failed', error: strings('en').errTooLong });
    // The queue moves on to the next message.
    expect(t.sent[1]?.message.text).toBe('next one');
  });

  it('retries rate-limited and timed-out messages later with the same client_id', async () => {
    const t = setup();
    t.connect();
    t.chat.submit('hello');
    t.sent[0]!.resolve({ ok: false, code: 'rate_limited', message: 'Slow down' });
    await flush();
    expect(t.notices).toEqual([strings('en').errRateLimited]);
    expect(t.items()[0]?.status).toBe('sending');
    expect(t.sent).toHaveLength(1);

    await vi.advanceTimersByTimeAsync(1000);
    expect(t.sent).toHaveLength(2);
    expect(t.sent[1]?.message.client_id).toBe('cid-1');
    t.sent[1]!.reject(new Error('operation has timed out'));
    await vi.advanceTimersByTimeAsync(1000);
    expect(t.sent.map((s) => s.message.client_id)).toEqual(['cid-1', 'cid-1', 'cid-1']);
  });

  it('gives up on a message after repeated server errors, then sends the next one', async () => {
    const t = setup();
    t.connect();
    t.chat.submit('breaks the server');
    t.chat.submit('next');
    for (let i = 0; i < 4; i++) {
      expect(t.sent[i]?.message.client_id).toBe('cid-1');
      t.sent[i]!.resolve({ ok: false, code: 'server_error', message: 'Something went wrong.' });
      await vi.advanceTimersByTimeAsync(1000);
    }
    expect(t.items()[0]).toMatchObject({ clientId: 'cid-1', status: 'failed', error: 'Something went wrong.' });
    expect(t.sent[4]?.message.client_id).toBe('cid-2');
  });

  it('ignores a late failure from a previous connection', async () => {
    const t = setup();
    t.connect();
    t.chat.submit('hello');
    t.disconnect();
    t.connect();
    expect(t.sent).toHaveLength(2);
    t.sent[0]!.reject(new Error('timeout'));
    await flush();
    t.sent[1]!.resolve({ ok: true, message: stored('m1', 1, 'cid-1', 'hello') });
    await flush();
    await vi.advanceTimersByTimeAsync(5000);
    expect(t.sent).toHaveLength(2);
    expect(t.items().map((i) => i.id)).toEqual(['m1']);
  });

  it('clears the conversation when the server issues a new token', () => {
    const t = setup();
    t.connect([msg({ id: 'a', seq: 1 })], 'tok-1');
    t.disconnect();
    t.chat.handleConnect();
    t.chat.handleSession({ token: 'tok-2', conversation_id: 'c2' });
    expect(t.items()).toEqual([]);
    expect(t.storage.getItem(TOKEN_KEY)).toBe('tok-2');
  });

  it('shows and hides the typing indicator, with a safety timeout', async () => {
    const t = setup();
    t.connect();
    t.chat.handleTyping({ active: true });
    expect(t.typing()).toBe(true);
    t.chat.handleTyping({ active: false });
    expect(t.typing()).toBe(false);
    t.chat.handleTyping({ active: true });
    await vi.advanceTimersByTimeAsync(5000);
    expect(t.typing()).toBe(false);
    t.chat.handleTyping({ active: true });
    t.chat.handleMessage(msg({ id: 'r', seq: 1 }));
    expect(t.typing()).toBe(false);
  });

  it('reports status changes and error notices', () => {
    const t = setup();
    t.chat.start();
    t.connect();
    t.disconnect();
    t.chat.handleErrorMessage({ code: 'rate_limited', message: 'Too many messages' });
    t.chat.handleErrorMessage({ code: 'maintenance', message: 'Back soon' });
    expect(t.statuses).toEqual(['connecting', 'connected', 'reconnecting']);
    expect(t.notices).toEqual([strings('en').errRateLimited, 'Back soon']);
  });

  describe('drafts', () => {
    const drafts = (t: ReturnType<typeof setup>) =>
      t.items().filter((i) => i.status === 'draft').map((i) => [i.replyTo, i.text]);
    const reply = (id: string, seq: number, text = `reply ${id}`) => msg({ id, seq, text, sender: 'bot' });

    it('accumulates pieces after the message being answered and is replaced by the reply', async () => {
      const t = setup();
      t.connect();
      t.chat.submit('what is a fever?');
      t.chat.handleDraft({ reply_to: 'cid-1', delta: 'A fever is ' });
      t.chat.handleDraft({ reply_to: 'cid-1', delta: 'a high temperature [1].' });
      expect(t.items().map((i) => [i.key, i.status])).toEqual([
        ['c:cid-1', 'sending'],
        ['d:cid-1', 'draft'],
      ]);
      expect(drafts(t)).toEqual([['cid-1', 'A fever is a high temperature [1].']]);

      // The server sends the stored reply before the ack.
      t.chat.handleMessage(reply('r1', 2, 'A fever is a high temperature [1].\n\nSources:\n[1] Fever'));
      expect(drafts(t)).toEqual([]);
      t.sent[0]!.resolve({ ok: true, message: stored('m1', 1, 'cid-1', 'what is a fever?') });
      await flush();
      expect(t.items().map((i) => [i.key, i.status, i.sender])).toEqual([
        ['c:cid-1', 'sent', 'patient'],
        ['m:r1', 'sent', 'bot'],
      ]);
      // Late pieces of an answered draft don't bring it back.
      t.chat.handleDraft({ reply_to: 'cid-1', delta: ' late' });
      expect(drafts(t)).toEqual([]);
    });

    it('reset throws the shown text away before another model writes the answer', () => {
      const t = setup();
      t.connect();
      t.chat.submit('hours?');
      t.chat.handleDraft({ reply_to: 'cid-1', delta: 'We are open 24' });
      t.chat.handleDraft({ reply_to: 'cid-1', reset: true });
      expect(drafts(t)).toEqual([]);
      t.chat.handleDraft({ reply_to: 'cid-1', delta: 'The clinic opens at 8 [1].' });
      expect(drafts(t)).toEqual([['cid-1', 'The clinic opens at 8 [1].']]);
    });

    it('shows a draft for a message sent from another tab at the end, then after that message', () => {
      const t = setup();
      t.connect([reply('r0', 1)]);
      t.chat.handleDraft({ reply_to: 'other-tab', delta: 'Writing' });
      expect(t.items().map((i) => i.key)).toEqual(['m:r0', 'd:other-tab']);
      t.chat.handleMessage(stored('m2', 2, 'other-tab', 'question'));
      expect(t.items().map((i) => i.key)).toEqual(['m:r0', 'c:other-tab', 'd:other-tab']);
      t.chat.handleMessage(reply('r3', 3));
      expect(t.items().map((i) => i.key)).toEqual(['m:r0', 'c:other-tab', 'm:r3']);
    });

    it('ignores invalid draft payloads', () => {
      const t = setup();
      t.connect();
      t.chat.submit('hi');
      const before = t.items();
      for (const bad of [
        undefined,
        'A fever is',
        { delta: 'no reply_to' },
        { reply_to: 'cid-1', delta: 7 },
        { reply_to: 'cid-1', delta: 'x'.repeat(4001) },
        { reply_to: 'cid-1', delta: 'x', reset: true },
        { reply_to: 'cid-1', reset: 'yes' },
        { reply_to: { $ne: '' }, delta: 'x' },
      ]) {
        t.chat.handleDraft(bad);
      }
      expect(t.items()).toBe(before);
      expect(drafts(t)).toEqual([]);
    });

    it('drops the draft when the message is refused', async () => {
      const t = setup();
      t.connect();
      t.chat.submit('hello');
      t.chat.handleDraft({ reply_to: 'cid-1', delta: 'Half an' });
      t.sent[0]!.resolve({ ok: false, code: 'server_error', message: 'Something went wrong.' });
      await flush();
      expect(drafts(t)).toEqual([]);
      expect(t.items()).toMatchObject([{ clientId: 'cid-1', status: 'sending' }]);

      // A resend may be answered afresh.
      await vi.advanceTimersByTimeAsync(1000);
      t.chat.handleDraft({ reply_to: 'cid-1', delta: 'Fresh' });
      expect(drafts(t)).toEqual([['cid-1', 'Fresh']]);
      t.sent[1]!.resolve({ ok: false, code: 'invalid', message: 'Nope' });
      await flush();
      expect(drafts(t)).toEqual([]);
      expect(t.items()).toMatchObject([{ clientId: 'cid-1', status: 'failed' }]);
    });

    it('drops a draft that gets no new piece for a minute', async () => {
      const t = setup();
      t.connect();
      t.chat.submit('hello');
      t.chat.handleDraft({ reply_to: 'cid-1', delta: 'one' });
      await vi.advanceTimersByTimeAsync(59000);
      t.chat.handleDraft({ reply_to: 'cid-1', delta: ' two' });
      await vi.advanceTimersByTimeAsync(59000);
      expect(drafts(t)).toEqual([['cid-1', 'one two']]);
      await vi.advanceTimersByTimeAsync(1000);
      expect(drafts(t)).toEqual([]);
      t.chat.handleDraft({ reply_to: 'cid-1', delta: ' three' });
      expect(drafts(t)).toEqual([]);
    });

    it('drops drafts on disconnect and forgets them with a new conversation', () => {
      const t = setup();
      t.connect();
      t.chat.handleDraft({ reply_to: 'x', delta: 'Writing' });
      t.disconnect();
      expect(drafts(t)).toEqual([]);
      t.connect([], 'tok-1');
      t.chat.handleDraft({ reply_to: 'x', delta: 'rest of it' });
      expect(drafts(t)).toEqual([]);

      t.disconnect();
      t.connect([], 'tok-2');
      t.chat.handleDraft({ reply_to: 'x', delta: 'A new conversation' });
      expect(drafts(t)).toEqual([['x', 'A new conversation']]);
    });
  });
});

