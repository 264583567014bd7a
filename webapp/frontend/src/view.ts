import type { Draft } from './drafts';
import type { PendingMessage } from './pendingQueue';
import type { Msg, QuickReply, Sender } from './protocol';

/** A message the patient sent that the server refused for good (shown with its error). */
export interface FailedMessage extends PendingMessage {
  error: string;
}

export type ItemStatus = 'sent' | 'sending' | 'failed' | 'draft';

/** One row of the rendered conversation. */
export interface ViewItem {
  /** Stable across the pending → confirmed transition, so the DOM node is reused. */
  key: string;
  id: string | null;
  clientId: string | null;
  /** For a draft: client_id of the patient message it answers; null otherwise. */
  replyTo: string | null;
  sender: Sender;
  text: string;
  buttons: readonly QuickReply[];
  createdAt: string;
  status: ItemStatus;
  error: string | null;
}

/**
 * Confirmed messages (by seq), then messages still being sent, then refused ones, in the
 * order they were typed. A pending/failed entry whose client_id already appears among the
 * confirmed messages is dropped: the stored message replaces it. Each draft (an answer
 * being written) follows the patient message it answers, or comes last when that message
 * is not on screen (yet).
 */
export function buildView(
  confirmed: readonly Msg[],
  pending: readonly PendingMessage[],
  failed: readonly FailedMessage[] = [],
  drafts: readonly Draft[] = [],
): ViewItem[] {
  const items: ViewItem[] = [];
  const keys = new Set<string>();
  const confirmedClientIds = new Set<string>();

  for (const m of confirmed) {
    let key = m.client_id !== null ? `c:${m.client_id}` : `m:${m.id}`;
    if (keys.has(key)) key = `m:${m.id}`;
    if (keys.has(key)) continue;
    keys.add(key);
    if (m.client_id !== null) confirmedClientIds.add(m.client_id);
    items.push({
      key,
      id: m.id,
      clientId: m.client_id,
      replyTo: null,
      sender: m.sender,
      text: m.text,
      buttons: m.buttons,
      createdAt: m.created_at,
      status: 'sent',
      error: null,
    });
  }

  type Local = [PendingMessage, ItemStatus, string | null];
  const local: Local[] = [
    ...pending.map((p): Local => [p, 'sending', null]),
    ...failed.map((f): Local => [f, 'failed', f.error]),
  ];
  // ISO timestamps from toISOString() sort correctly as strings; the sort is stable.
  local.sort((a, b) => (a[0].created_at < b[0].created_at ? -1 : a[0].created_at > b[0].created_at ? 1 : 0));
  for (const [p, status, error] of local) {
    const key = `c:${p.client_id}`;
    if (confirmedClientIds.has(p.client_id) || keys.has(key)) continue;
    keys.add(key);
    items.push({
      key,
      id: null,
      clientId: p.client_id,
      replyTo: null,
      sender: 'patient',
      text: p.text,
      buttons: [],
      createdAt: p.created_at,
      status,
      error,
    });
  }

  for (const d of drafts) {
    const key = `d:${d.replyTo}`;
    if (keys.has(key)) continue;
    keys.add(key);
    const item: ViewItem = {
      key,
      id: null,
      clientId: null,
      replyTo: d.replyTo,
      sender: 'bot',
      text: d.text,
      buttons: [],
      createdAt: '',
      status: 'draft',
      error: null,
    };
    const answered = items.findIndex((i) => i.sender === 'patient' && i.clientId === d.replyTo);
    if (answered === -1) items.push(item);
    else items.splice(answered + 1, 0, item);
  }
  return items;
}
