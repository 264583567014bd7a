// Types and defensive parsers for the chat server's socket.io protocol.
// Everything coming from the network is `unknown` until it passes a parser here.

export type Sender = 'patient' | 'bot' | 'staff' | 'system';
export type Direction = 'inbound' | 'outbound';

export interface QuickReply {
  title: string;
  payload: string;
}

export interface Msg {
  id: string;
  seq: number;
  direction: Direction;
  sender: Sender;
  text: string;
  buttons: QuickReply[];
  created_at: string;
  client_id: string | null;
}

export interface SessionInfo {
  token: string;
  conversation_id: string;
}

export interface ServerNotice {
  code: string;
  message: string;
}

export type AckResult =
  | { ok: true; message: Msg }
  | { ok: false; code: string; message: string };

/**
 * A piece of an answer still being written (`draft` event), for the patient message whose
 * client_id is `reply_to`: either text to append, or `reset` (drop what was shown so far).
 */
export type DraftEvent = { reply_to: string; delta: string } | { reply_to: string; reset: true };

/** Longest `delta` accepted in one `draft` event; longer ones are ignored. */
export const MAX_DRAFT_DELTA = 4000;
/** Same limit the server puts on client ids. */
export const MAX_CLIENT_ID = 64;

export interface OutgoingMessage {
  client_id: string;
  text: string;
  payload?: string;
}

/**
 * Ack error codes worth retrying later with the same client_id; anything else is final.
 * `rate_limited` always clears with time; the others are server trouble and are retried
 * only a few times (see ChatController).
 */
export const RETRYABLE_CODES: ReadonlySet<string> = new Set(['rate_limited', 'server_error', 'unavailable']);

export function isRetryable(code: string): boolean {
  return RETRYABLE_CODES.has(code);
}

const SENDERS: ReadonlySet<string> = new Set(['patient', 'bot', 'staff', 'system']);

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function parseButtons(x: unknown): QuickReply[] {
  if (!Array.isArray(x)) return [];
  const out: QuickReply[] = [];
  for (const b of x) {
    if (isRecord(b) && typeof b.title === 'string' && b.title.trim() !== '') {
      out.push({ title: b.title, payload: typeof b.payload === 'string' ? b.payload : b.title });
    }
  }
  return out;
}

/** Returns a normalised Msg, or null when the required fields (id, seq, text) are unusable. */
export function parseMsg(x: unknown): Msg | null {
  if (!isRecord(x)) return null;
  const { id, seq, text } = x;
  if (typeof id !== 'string' || id === '') return null;
  if (typeof seq !== 'number' || !Number.isFinite(seq)) return null;
  if (typeof text !== 'string') return null;
  const direction: Direction = x.direction === 'inbound' ? 'inbound' : 'outbound';
  const sender: Sender =
    typeof x.sender === 'string' && SENDERS.has(x.sender)
      ? (x.sender as Sender)
      : direction === 'inbound'
        ? 'patient'
        : 'bot';
  return {
    id,
    seq,
    direction,
    sender,
    text,
    buttons: parseButtons(x.buttons),
    created_at: typeof x.created_at === 'string' ? x.created_at : '',
    client_id: typeof x.client_id === 'string' && x.client_id !== '' ? x.client_id : null,
  };
}

export function parseSession(x: unknown): SessionInfo | null {
  if (!isRecord(x) || typeof x.token !== 'string' || x.token === '') return null;
  return {
    token: x.token,
    conversation_id: typeof x.conversation_id === 'string' ? x.conversation_id : '',
  };
}

export function parseHistory(x: unknown): Msg[] {
  if (!isRecord(x) || !Array.isArray(x.messages)) return [];
  const out: Msg[] = [];
  for (const m of x.messages) {
    const msg = parseMsg(m);
    if (msg) out.push(msg);
  }
  return out;
}

export function parseTyping(x: unknown): boolean {
  return isRecord(x) && x.active === true;
}

/**
 * `{reply_to, delta}` or `{reply_to, reset: true}`; anything else (both, neither, a non-string
 * or over-long delta, a missing or over-long reply_to) is null. Unknown extra keys are ignored.
 */
export function parseDraft(x: unknown): DraftEvent | null {
  if (!isRecord(x)) return null;
  const { reply_to, delta, reset } = x;
  if (typeof reply_to !== 'string' || reply_to === '' || reply_to.length > MAX_CLIENT_ID) return null;
  if (delta !== undefined && reset !== undefined) return null;
  if (reset === true) return { reply_to, reset: true };
  if (typeof delta === 'string' && delta.length <= MAX_DRAFT_DELTA) return { reply_to, delta };
  return null;
}

export function parseNotice(x: unknown): ServerNotice {
  if (!isRecord(x)) return { code: 'error', message: '' };
  return {
    code: typeof x.code === 'string' ? x.code : 'error',
    message: typeof x.message === 'string' ? x.message : '',
  };
}

export function parseAck(x: unknown): AckResult {
  if (isRecord(x) && x.ok === true) {
    const message = parseMsg(x.message);
    if (message) return { ok: true, message };
    return { ok: false, code: 'bad_response', message: '' };
  }
  if (isRecord(x) && x.ok === false) {
    return {
      ok: false,
      code: typeof x.code === 'string' ? x.code : 'error',
      message: typeof x.message === 'string' ? x.message : '',
    };
  }
  return { ok: false, code: 'bad_response', message: '' };
}
