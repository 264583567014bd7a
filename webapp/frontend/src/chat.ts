import { DraftStore } from './drafts';
import { errorText, type Strings } from './i18n';
import { MessageStore } from './messageStore';
import { PendingQueue, type PendingMessage } from './pendingQueue';
import {
  isRetryable,
  parseAck,
  parseDraft,
  parseHistory,
  parseMsg,
  parseNotice,
  parseSession,
  parseTyping,
  type OutgoingMessage,
  type QuickReply,
} from './protocol';
import { TOKEN_KEY, type KeyValueStorage } from './storage';
import { buildView, type FailedMessage, type ViewItem } from './view';

export const MAX_MESSAGE_LENGTH = 2000;

export type ConnectionStatus = 'connecting' | 'connected' | 'reconnecting';

/** What the controller needs from the page. Implemented by the DOM in main.ts, by fakes in tests. */
export interface ChatView {
  renderItems(items: readonly ViewItem[], scrollToEnd: boolean): void;
  setStatus(status: ConnectionStatus): void;
  setTyping(active: boolean): void;
  showNotice(text: string): void;
}

export interface ChatDeps {
  storage: KeyValueStorage;
  view: ChatView;
  strings: Strings;
  /** Emit `user_message` and resolve with the raw ack; reject on ack timeout or disconnect. */
  send(message: OutgoingMessage): Promise<unknown>;
  isConnected(): boolean;
  newId(): string;
  now?: () => Date;
  /** Delays between retries of a message that timed out or was rate limited. */
  retryDelaysMs?: readonly number[];
  /** Hide the typing indicator if the server never says it stopped. */
  typingTimeoutMs?: number;
  /** How often a message refused with `server_error`/`unavailable` is retried before giving up. */
  maxServerErrorRetries?: number;
  /** Drop a draft answer that got no new piece for this long. */
  draftTimeoutMs?: number;
}

type SendOutcome = 'done' | 'retry' | 'stale';

/**
 * Protocol state machine: conversation, pending queue, resend-on-reconnect and dedupe.
 * No DOM and no socket in here; main.ts forwards socket events to the handle* methods.
 */
export class ChatController {
  private readonly store = new MessageStore();
  /** Answers being written (`draft` events), shown until the stored reply arrives. */
  private readonly drafts = new DraftStore();
  private readonly draftTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly pending: PendingQueue;
  private failed: FailedMessage[] = [];
  /** Token of the conversation currently rendered. */
  private sessionToken: string | null = null;
  private conversationId: string | null = null;
  /** Bumped on every disconnect; async results from an older connection are stale. */
  private epoch = 0;
  /** True once `history` has arrived on the current connection (reset on disconnect). */
  private ready = false;
  private flushingEpoch = -1;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private retryAttempt = 0;
  private typingTimer: ReturnType<typeof setTimeout> | null = null;
  /** Server-error refusals per client_id (in memory; a reload starts over). */
  private readonly serverErrors = new Map<string, number>();
  private readonly retryDelaysMs: readonly number[];
  private readonly typingTimeoutMs: number;
  private readonly maxServerErrorRetries: number;
  private readonly draftTimeoutMs: number;
  private readonly now: () => Date;

  constructor(private readonly deps: ChatDeps) {
    this.pending = new PendingQueue(deps.storage);
    this.retryDelaysMs = deps.retryDelaysMs ?? [2000, 5000, 10000, 30000];
    this.typingTimeoutMs = deps.typingTimeoutMs ?? 60000;
    this.maxServerErrorRetries = deps.maxServerErrorRetries ?? 3;
    this.draftTimeoutMs = deps.draftTimeoutMs ?? 60000;
    this.now = deps.now ?? (() => new Date());
  }

  /** Stored token for the connection's auth, or null for a new conversation. */
  token(): string | null {
    const t = this.deps.storage.getItem(TOKEN_KEY);
    return t !== null && t !== '' ? t : null;
  }

  get currentConversationId(): string | null {
    return this.conversationId;
  }

  /** Show what is already queued from a previous visit before the connection is up. */
  start(): void {
    this.deps.view.setStatus('connecting');
    this.render(true);
  }

  // ---- socket events -------------------------------------------------------------------

  /**
   * Note: socket.io-client fires `connect` AFTER the events the server emitted during the
   * handshake (`session`, `history`), so readiness is tied to `history`, not to `connect`.
   */
  handleConnect(): void {
    this.deps.view.setStatus('connected');
    void this.flush();
  }

  handleDisconnect(): void {
    this.epoch++;
    this.ready = false;
    this.clearRetry();
    this.setTyping(false);
    // Pieces sent while offline are lost, so a draft can't be continued: the stored reply
    // comes with the next history (or as a message event) instead.
    if (this.finishDrafts()) this.render(false);
    this.deps.view.setStatus('reconnecting');
  }

  handleSession(data: unknown): void {
    const session = parseSession(data);
    if (!session) return;
    if (session.token !== this.sessionToken) {
      // A different token is a different conversation: forget what is on screen.
      this.store.clear();
      this.failed = [];
      this.clearDrafts();
      this.render(false);
    }
    this.sessionToken = session.token;
    this.conversationId = session.conversation_id;
    this.deps.storage.setItem(TOKEN_KEY, session.token);
  }

  handleHistory(data: unknown): void {
    this.store.reset(parseHistory(data));
    this.retirePendingKnownToServer();
    this.ready = true;
    this.render(true);
    this.clearRetry();
    this.retryAttempt = 0;
    void this.flush();
  }

  handleMessage(data: unknown): void {
    const msg = parseMsg(data);
    if (!msg) return;
    const added = this.store.add(msg);
    const retired = msg.client_id !== null ? this.retire(msg.client_id) : false;
    if (msg.sender === 'bot' || msg.sender === 'staff') this.setTyping(false);
    // The stored reply replaces the draft. Replies don't say which message they answer, and a
    // conversation is answered one message at a time, so any reply ends every draft.
    const drafted = msg.sender !== 'patient' && this.finishDrafts();
    if (added || retired || drafted) this.render(msg.sender === 'patient');
  }

  /** A piece of an answer being written, or `reset` (throw away what was shown so far). */
  handleDraft(data: unknown): void {
    const event = parseDraft(data);
    if (!event) return;
    const id = event.reply_to;
    const changed = this.drafts.apply(event);
    if (this.drafts.has(id)) this.armDraftTimer(id);
    else this.clearDraftTimer(id);
    if (changed) this.render(false);
  }

  handleTyping(data: unknown): void {
    this.setTyping(parseTyping(data));
  }

  handleErrorMessage(data: unknown): void {
    const notice = parseNotice(data);
    this.deps.view.showNotice(errorText(this.deps.strings, notice.code, notice.message));
  }

  /** Another tab changed the shared pending queue. */
  handleStorageChange(): void {
    this.render(false);
  }

  // ---- user actions --------------------------------------------------------------------

  /** Queue and send typed text. Returns false when there was nothing valid to send. */
  submit(rawText: string): boolean {
    const text = rawText.trim();
    if (text === '') return false;
    if (text.length > MAX_MESSAGE_LENGTH) {
      this.deps.view.showNotice(this.deps.strings.errTooLong);
      return false;
    }
    this.enqueue({ client_id: this.deps.newId(), text, created_at: this.now().toISOString() });
    return true;
  }

  /** A quick-reply button was pressed: send its title as text and its payload. */
  choose(button: QuickReply): void {
    this.enqueue({
      client_id: this.deps.newId(),
      text: button.title,
      payload: button.payload,
      created_at: this.now().toISOString(),
    });
  }

  // ---- internals -----------------------------------------------------------------------

  private enqueue(entry: PendingMessage): void {
    this.pending.add(entry);
    this.render(true);
    void this.flush();
  }

  /**
   * Send queued messages one at a time, oldest first, so the server sees them in order.
   * Only after `history` on a live connection; stops when the connection changes.
   */
  async flush(): Promise<void> {
    const epoch = this.epoch;
    if (!this.ready || !this.deps.isConnected() || this.flushingEpoch === epoch) return;
    this.flushingEpoch = epoch;
    try {
      while (this.epoch === epoch && this.ready) {
        const next = this.pending.list()[0];
        if (!next) break;
        const outcome = await this.sendOne(next, epoch);
        if (outcome === 'retry') {
          this.scheduleRetry();
          break;
        }
        if (outcome === 'stale') break;
      }
    } finally {
      if (this.flushingEpoch === epoch) this.flushingEpoch = -1;
    }
  }

  private async sendOne(entry: PendingMessage, epoch: number): Promise<SendOutcome> {
    const tokenAtSend = this.sessionToken;
    const outgoing: OutgoingMessage = { client_id: entry.client_id, text: entry.text };
    if (entry.payload !== undefined) outgoing.payload = entry.payload;

    let raw: unknown;
    try {
      raw = await this.deps.send(outgoing);
    } catch {
      // Ack timeout or disconnect. The server may or may not have stored it; resending
      // with the same client_id is safe because the server deduplicates.
      return epoch === this.epoch ? 'retry' : 'stale';
    }
    const ack = parseAck(raw);
    // Refused: whatever was drafted for it is not going to be the answer.
    if (!ack.ok && this.removeDraft(entry.client_id)) this.render(false);
    if (ack.ok) {
      this.retryAttempt = 0;
      this.serverErrors.delete(entry.client_id);
      if (this.sessionToken === tokenAtSend) this.store.add(ack.message);
      this.retire(entry.client_id);
      if (ack.message.client_id !== null) this.retire(ack.message.client_id);
      this.render(false);
      return epoch === this.epoch ? 'done' : 'stale';
    }
    if (ack.code === 'rate_limited') {
      this.deps.view.showNotice(errorText(this.deps.strings, ack.code, ack.message));
      return epoch === this.epoch ? 'retry' : 'stale';
    }
    if (isRetryable(ack.code)) {
      const failures = (this.serverErrors.get(entry.client_id) ?? 0) + 1;
      this.serverErrors.set(entry.client_id, failures);
      if (failures <= this.maxServerErrorRetries) return epoch === this.epoch ? 'retry' : 'stale';
    }
    this.serverErrors.delete(entry.client_id);
    // Final refusal: keep the text on screen with the reason, but stop sending it.
    if (this.pending.remove(entry.client_id) > 0) {
      this.failed.push({ ...entry, error: errorText(this.deps.strings, ack.code, ack.message) });
      this.render(false);
    }
    return epoch === this.epoch ? 'done' : 'stale';
  }

  private scheduleRetry(): void {
    if (this.retryTimer !== null) return;
    const delays = this.retryDelaysMs;
    const delay = delays[Math.min(this.retryAttempt, delays.length - 1)] ?? 5000;
    this.retryAttempt++;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.flush();
    }, delay);
  }

  private clearRetry(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /** Drop the pending/failed entry with this client_id (the server has the message). */
  private retire(clientId: string): boolean {
    const before = this.failed.length;
    this.failed = this.failed.filter((f) => f.client_id !== clientId);
    return this.pending.remove(clientId) > 0 || this.failed.length !== before;
  }

  private retirePendingKnownToServer(): void {
    const known = this.store.clientIds();
    if (known.size === 0) return;
    this.pending.remove(...known);
    this.failed = this.failed.filter((f) => !known.has(f.client_id));
  }

  private armDraftTimer(replyTo: string): void {
    this.clearDraftTimer(replyTo);
    this.draftTimers.set(
      replyTo,
      setTimeout(() => {
        this.draftTimers.delete(replyTo);
        if (this.drafts.finish(replyTo)) this.render(false);
      }, this.draftTimeoutMs),
    );
  }

  private clearDraftTimer(replyTo: string): void {
    const timer = this.draftTimers.get(replyTo);
    if (timer !== undefined) clearTimeout(timer);
    this.draftTimers.delete(replyTo);
  }

  /** Drop one draft (a later piece may start it again). Returns whether one was shown. */
  private removeDraft(replyTo: string): boolean {
    this.clearDraftTimer(replyTo);
    return this.drafts.remove(replyTo);
  }

  /** Drop every draft and ignore late pieces of them. Returns whether any was shown. */
  private finishDrafts(): boolean {
    const ids = this.drafts.finishAll();
    for (const id of ids) this.clearDraftTimer(id);
    return ids.length > 0;
  }

  private clearDrafts(): void {
    for (const timer of this.draftTimers.values()) clearTimeout(timer);
    this.draftTimers.clear();
    this.drafts.clear();
  }

  private setTyping(active: boolean): void {
    if (this.typingTimer !== null) clearTimeout(this.typingTimer);
    this.typingTimer = null;
    if (active) {
      this.typingTimer = setTimeout(() => this.setTyping(false), this.typingTimeoutMs);
    }
    this.deps.view.setTyping(active);
  }

  private render(scrollToEnd: boolean): void {
    this.deps.view.renderItems(
      buildView(this.store.list(), this.pending.list(), this.failed, this.drafts.list()),
      scrollToEnd,
    );
  }
}
