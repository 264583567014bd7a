import type { DraftEvent } from './protocol';

/** An answer still being written, shown after the patient message it answers. */
export interface Draft {
  /** client_id of the patient message being answered. */
  replyTo: string;
  text: string;
}

/** A draft stops growing past this (the stored reply replaces it anyway). */
export const MAX_DRAFT_LENGTH = 20000;
/** More simultaneous drafts than this are not shown. */
export const MAX_DRAFTS = 4;
/** How many finished reply_to ids are remembered (oldest forgotten first). */
const MAX_FINISHED = 200;

/**
 * Answers being streamed (`draft` events), by the client_id they answer, in arrival order.
 * A draft that was finished (its reply arrived, it went stale, the connection dropped) is
 * remembered, so late pieces of it are ignored instead of starting a new draft mid-sentence.
 * No DOM and no timers in here; ChatController owns the timeouts.
 */
export class DraftStore {
  private readonly drafts = new Map<string, string>();
  private readonly finished = new Set<string>();

  /** Apply one event. Returns true when what should be shown changed. */
  apply(event: DraftEvent): boolean {
    const id = event.reply_to;
    if (this.finished.has(id)) return false;
    if ('reset' in event) return this.drafts.delete(id);
    const before = this.drafts.get(id);
    if (before === undefined && this.drafts.size >= MAX_DRAFTS) return false;
    const text = (before ?? '') + event.delta;
    if (text.length > MAX_DRAFT_LENGTH) return false;
    this.drafts.set(id, text);
    return text !== (before ?? '');
  }

  has(replyTo: string): boolean {
    return this.drafts.has(replyTo);
  }

  /** Drop a draft; a later piece for it starts a new one (e.g. the message is sent again). */
  remove(replyTo: string): boolean {
    return this.drafts.delete(replyTo);
  }

  /** Drop a draft and ignore anything that still arrives for it. */
  finish(replyTo: string): boolean {
    const had = this.drafts.delete(replyTo);
    this.finished.delete(replyTo);
    this.finished.add(replyTo);
    if (this.finished.size > MAX_FINISHED) {
      const oldest = this.finished.values().next().value;
      if (oldest !== undefined) this.finished.delete(oldest);
    }
    return had;
  }

  /** finish() every current draft; returns their reply_to ids. */
  finishAll(): string[] {
    const ids = [...this.drafts.keys()];
    for (const id of ids) this.finish(id);
    return ids;
  }

  /** Forget everything, finished ids included (a different conversation). */
  clear(): void {
    this.drafts.clear();
    this.finished.clear();
  }

  get size(): number {
    return this.drafts.size;
  }

  /** Drafts with some text, oldest first (a reset one is not shown until text arrives). */
  list(): Draft[] {
    const out: Draft[] = [];
    for (const [replyTo, text] of this.drafts) if (text !== '') out.push({ replyTo, text });
    return out;
  }
}
