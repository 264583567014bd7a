import { PENDING_KEY, type KeyValueStorage } from './storage';

/** An outgoing message that the server has not acknowledged yet. */
export interface PendingMessage {
  client_id: string;
  text: string;
  payload?: string;
  created_at: string;
}

function isPending(x: unknown): x is PendingMessage {
  if (typeof x !== 'object' || x === null) return false;
  const r = x as Record<string, unknown>;
  return (
    typeof r.client_id === 'string' &&
    r.client_id !== '' &&
    typeof r.text === 'string' &&
    typeof r.created_at === 'string' &&
    (r.payload === undefined || typeof r.payload === 'string')
  );
}

/**
 * Un-acked outgoing messages, persisted in storage so that nothing typed is lost across
 * reloads or disconnects. Always reads through to storage, so several tabs stay consistent.
 */
export class PendingQueue {
  constructor(
    private readonly storage: KeyValueStorage,
    private readonly key: string = PENDING_KEY,
  ) {}

  list(): PendingMessage[] {
    const raw = this.storage.getItem(this.key);
    if (raw === null) return [];
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      return [];
    }
    if (!Array.isArray(parsed)) return [];
    const seen = new Set<string>();
    const out: PendingMessage[] = [];
    for (const item of parsed) {
      if (isPending(item) && !seen.has(item.client_id)) {
        seen.add(item.client_id);
        const entry: PendingMessage = { client_id: item.client_id, text: item.text, created_at: item.created_at };
        if (item.payload !== undefined) entry.payload = item.payload;
        out.push(entry);
      }
    }
    return out;
  }

  /** Appends the message unless one with the same client_id is already queued. */
  add(message: PendingMessage): void {
    const items = this.list();
    if (items.some((m) => m.client_id === message.client_id)) return;
    items.push(message);
    this.save(items);
  }

  has(clientId: string): boolean {
    return this.list().some((m) => m.client_id === clientId);
  }

  /** Removes the entries with these client_ids; returns how many were removed. */
  remove(...clientIds: string[]): number {
    if (clientIds.length === 0) return 0;
    const drop = new Set(clientIds);
    const items = this.list();
    const kept = items.filter((m) => !drop.has(m.client_id));
    if (kept.length !== items.length) this.save(kept);
    return items.length - kept.length;
  }

  clear(): void {
    this.storage.removeItem(this.key);
  }

  private save(items: PendingMessage[]): void {
    if (items.length === 0) this.storage.removeItem(this.key);
    else this.storage.setItem(this.key, JSON.stringify(items));
  }
}
