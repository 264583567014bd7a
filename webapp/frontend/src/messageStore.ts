import type { Msg } from './protocol';

function bySeq(a: Msg, b: Msg): number {
  if (a.seq !== b.seq) return a.seq - b.seq;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** The confirmed (server-stored) messages of the current conversation, unique by id, ordered by seq. */
export class MessageStore {
  private readonly byId = new Map<string, Msg>();
  private ordered: Msg[] | null = [];

  /** Replace everything (e.g. with a `history` payload). Duplicate ids keep the first occurrence. */
  reset(messages: readonly Msg[]): void {
    this.byId.clear();
    for (const m of messages) {
      if (!this.byId.has(m.id)) this.byId.set(m.id, m);
    }
    this.ordered = null;
  }

  /** Add one message. Returns false (and changes nothing) when its id is already known. */
  add(message: Msg): boolean {
    if (this.byId.has(message.id)) return false;
    this.byId.set(message.id, message);
    this.ordered = null;
    return true;
  }

  clear(): void {
    this.reset([]);
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  get size(): number {
    return this.byId.size;
  }

  /** client_ids of all stored messages (used to retire pending entries). */
  clientIds(): Set<string> {
    const ids = new Set<string>();
    for (const m of this.byId.values()) {
      if (m.client_id !== null) ids.add(m.client_id);
    }
    return ids;
  }

  list(): readonly Msg[] {
    if (this.ordered === null) this.ordered = [...this.byId.values()].sort(bySeq);
    return this.ordered;
  }
}
