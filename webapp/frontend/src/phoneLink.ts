import { format, type Strings } from './i18n';
import { parseSession } from './protocol';

// "Continue by text message": the patient links a mobile number so the conversation goes on
// by SMS. Protocol (socket.io):
//   session      … linked_phone: string | null   (masked, e.g. "•••• 4567")
//   link_phone   {phone}  → ack {ok: true, masked, expires_in_s} | {ok: false, code, message}
//   verify_phone {code}   → ack {ok: true, masked} | {ok: false, code, message, attempts_left?}
// Parsers for those payloads and the state machine of the control live here; no DOM and no
// socket (main.ts wires the socket, phoneLinkView.ts the page).

/** Digits in the code the server texts. */
export const CODE_LENGTH = 6;
/** A new code may be asked for this long after the last one was sent. */
export const RESEND_AFTER_MS = 30000;
/** Longer phone input is refused without asking the server (which takes up to 40 characters). */
export const MAX_PHONE_INPUT = 40;
/** Longest masked number accepted from the server. */
export const MAX_MASKED = 64;

export type LinkPhoneAck =
  | { ok: true; masked: string; expiresInS: number | null }
  | { ok: false; code: string; message: string };

export type VerifyPhoneAck =
  | { ok: true; masked: string }
  | { ok: false; code: string; message: string; attemptsLeft: number | null };

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function parseMasked(x: unknown): string | null {
  if (typeof x !== 'string') return null;
  const masked = x.trim();
  return masked !== '' && masked.length <= MAX_MASKED ? masked : null;
}

function parseFailure(x: Record<string, unknown>): { code: string; message: string } {
  return {
    code: typeof x.code === 'string' && x.code !== '' ? x.code : 'error',
    message: typeof x.message === 'string' ? x.message : '',
  };
}

/** The masked number from a `session` payload, or null (none linked, or unusable). */
export function parseLinkedPhone(session: unknown): string | null {
  return isRecord(session) ? parseMasked(session.linked_phone) : null;
}

/** Ack of `link_phone`. A success without a usable `masked` is `bad_response`. */
export function parseLinkPhoneAck(x: unknown): LinkPhoneAck {
  if (isRecord(x) && x.ok === true) {
    const masked = parseMasked(x.masked);
    if (masked === null) return { ok: false, code: 'bad_response', message: '' };
    const e = x.expires_in_s;
    const expiresInS = typeof e === 'number' && Number.isFinite(e) && e > 0 ? e : null;
    return { ok: true, masked, expiresInS };
  }
  if (isRecord(x) && x.ok === false) return { ok: false, ...parseFailure(x) };
  return { ok: false, code: 'bad_response', message: '' };
}

/** Ack of `verify_phone`. `attempts_left` is kept only when it is a whole number ≥ 0. */
export function parseVerifyPhoneAck(x: unknown): VerifyPhoneAck {
  if (isRecord(x) && x.ok === true) {
    const masked = parseMasked(x.masked);
    if (masked === null) return { ok: false, code: 'bad_response', message: '', attemptsLeft: null };
    return { ok: true, masked };
  }
  if (isRecord(x) && x.ok === false) {
    const a = x.attempts_left;
    const attemptsLeft = typeof a === 'number' && Number.isInteger(a) && a >= 0 ? a : null;
    return { ok: false, ...parseFailure(x), attemptsLeft };
  }
  return { ok: false, code: 'bad_response', message: '', attemptsLeft: null };
}

/**
 * The code as the server wants it (six ASCII digits), or null. Spaces and dashes are
 * dropped and full-width digits folded, as people paste "123 456" or "１２３４５６".
 */
export function normalizeCode(raw: string): string | null {
  const code = raw.normalize('NFKC').replace(/[\s\-‐‑–—.]/g, '');
  return new RegExp(`^[0-9]{${CODE_LENGTH}}$`).test(code) ? code : null;
}

/** A verify error after which the old code is useless: the patient needs a new one. */
const NEEDS_NEW_CODE: ReadonlySet<string> = new Set(['expired', 'locked', 'no_pending_code']);
/** Errors worth the same request again (no answer, or trouble on the server's side). */
const RETRYABLE: ReadonlySet<string> = new Set(['offline', 'bad_response', 'sms_unavailable']);

// ---- state machine ----------------------------------------------------------------------

/** phone: typing a number; code: typing the texted code; linked: texts go to a number. */
export type PhoneLinkStep = 'phone' | 'code' | 'linked';
/** Which request is waiting for its ack. */
export type PhoneLinkBusy = 'link' | 'resend' | 'verify';
export type PhoneLinkFocus = 'phone' | 'code' | 'resend' | 'change' | 'retry';

export interface PhoneLinkError {
  /** Server code, or `offline` (no ack), `bad_response`, `local` (refused before sending). */
  code: string;
  /** What to show: the server's message, or a local text when it sent none. */
  text: string;
  /** Show "Try again" (repeats the last request). */
  retryable: boolean;
  attemptsLeft: number | null;
}

export interface PhoneLinkState {
  /** A `session` arrived, so the control can be shown. */
  ready: boolean;
  /** The panel (number / code entry) is expanded. */
  open: boolean;
  step: PhoneLinkStep;
  busy: PhoneLinkBusy | null;
  /** The number last submitted, as typed (resends go to it). */
  phone: string;
  /** Masked number the current code went to (code step). */
  pendingMasked: string | null;
  expiresInS: number | null;
  /** Seconds until a new code may be asked for; 0 = now. */
  resendInS: number;
  /** Masked number texts currently go to, if any. */
  linkedMasked: string | null;
  error: PhoneLinkError | null;
}

/** What the controller needs from the page. Implemented in phoneLinkView.ts, by fakes in tests. */
export interface PhoneLinkView {
  render(state: Readonly<PhoneLinkState>): void;
  /** Move focus after the patient's own action; `clear` empties the code field first. */
  focus(target: PhoneLinkFocus, clear: boolean): void;
}

export interface PhoneLinkDeps {
  view: PhoneLinkView;
  strings: Strings;
  /** Emit `link_phone` and resolve with the raw ack; reject on ack timeout or disconnect. */
  linkPhone(request: { phone: string }): Promise<unknown>;
  /** Emit `verify_phone` and resolve with the raw ack; reject on ack timeout or disconnect. */
  verifyPhone(request: { code: string }): Promise<unknown>;
  isConnected(): boolean;
  now?: () => number;
  resendAfterMs?: number;
}

type PhoneRequest = { kind: 'link' | 'resend'; phone: string } | { kind: 'verify'; code: string };

type CoreState = Omit<PhoneLinkState, 'resendInS'>;

function initialState(): CoreState {
  return {
    ready: false,
    open: false,
    step: 'phone',
    busy: null,
    phone: '',
    pendingMasked: null,
    expiresInS: null,
    linkedMasked: null,
    error: null,
  };
}

/**
 * One request at a time: every action is ignored while an ack is awaited. A failed or
 * unanswered request keeps the patient where they were, with the error to show; one that
 * got no answer (timeout, disconnect, offline) can be repeated with retry().
 */
export class PhoneLinkController {
  private st: CoreState = initialState();
  /** When a new code may be asked for (ms, deps.now clock); 0 = any time. */
  private resendAt = 0;
  private token: string | null = null;
  /** Bumped per request and on reset/disconnect; an ack for an older one is ignored. */
  private seq = 0;
  private lastRequest: PhoneRequest | null = null;
  private tickTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly now: () => number;
  private readonly resendAfterMs: number;

  constructor(private readonly deps: PhoneLinkDeps) {
    this.now = deps.now ?? (() => Date.now());
    this.resendAfterMs = deps.resendAfterMs ?? RESEND_AFTER_MS;
  }

  get state(): PhoneLinkState {
    const left = Math.max(0, this.resendAt - this.now());
    return { ...this.st, resendInS: this.st.step === 'code' ? Math.ceil(left / 1000) : 0 };
  }

  start(): void {
    this.render();
  }

  dispose(): void {
    this.clearTick();
  }

  // ---- socket events -------------------------------------------------------------------

  handleSession(data: unknown): void {
    const session = parseSession(data);
    if (!session) return;
    // Another conversation: whatever was going on belonged to the old one.
    if (this.token !== null && session.token !== this.token) this.reset();
    this.token = session.token;
    const linked = parseLinkedPhone(data);
    const st = this.st;
    st.ready = true;
    st.linkedMasked = linked;
    // Don't interrupt the patient typing a number or a code; otherwise show what the server says.
    if (st.busy === null && st.step !== 'code') {
      if (linked !== null && !(st.step === 'phone' && st.open)) {
        st.step = 'linked';
        st.open = false;
        st.error = null;
      } else if (linked === null && st.step === 'linked') {
        st.step = 'phone';
      }
    }
    this.render();
  }

  /** An ack still awaited is not coming (socket.io drops it): say so now, offer a retry. */
  handleDisconnect(): void {
    if (this.st.busy === null) return;
    this.seq++;
    this.fail({ code: 'offline', text: this.deps.strings.smsErrOffline, retryable: true, attemptsLeft: null }, 'retry', false);
  }

  // ---- patient actions -----------------------------------------------------------------

  /** Expand or collapse the panel. Collapsing while a number is linked abandons a change. */
  toggle(): void {
    const st = this.st;
    if (st.busy !== null || st.step === 'linked') return;
    if (st.open) {
      st.open = false;
      st.error = null;
      if (st.linkedMasked !== null) st.step = 'linked';
      this.render();
      return;
    }
    st.open = true;
    this.render();
    this.deps.view.focus(st.step === 'code' ? 'code' : 'phone', false);
  }

  /** From the linked state: enter a different number. */
  changeNumber(): void {
    const st = this.st;
    if (st.busy !== null || st.step !== 'linked') return;
    st.step = 'phone';
    st.open = true;
    st.error = null;
    this.render();
    this.deps.view.focus('phone', false);
  }

  submitPhone(raw: string): void {
    const st = this.st;
    if (st.busy !== null || st.step !== 'phone') return;
    const phone = raw.trim();
    if (phone === '') return this.localError(this.deps.strings.smsErrPhoneEmpty, 'phone');
    if (phone.length > MAX_PHONE_INPUT) return this.localError(this.deps.strings.smsErrPhoneInvalid, 'phone');
    st.phone = phone;
    void this.send({ kind: 'link', phone });
  }

  submitCode(raw: string): void {
    const st = this.st;
    if (st.busy !== null || st.step !== 'code') return;
    const code = normalizeCode(raw);
    if (code === null) return this.localError(this.deps.strings.smsErrCodeFormat, 'code');
    void this.send({ kind: 'verify', code });
  }

  /** Text a new code to the same number (30 s after the last one was sent). */
  resend(): void {
    const st = this.st;
    if (st.busy !== null || st.step !== 'code' || st.phone === '' || this.state.resendInS > 0) return;
    void this.send({ kind: 'resend', phone: st.phone });
  }

  /** From the code step: back to the number. */
  useAnotherNumber(): void {
    const st = this.st;
    if (st.busy !== null || st.step !== 'code') return;
    st.step = 'phone';
    st.pendingMasked = null;
    st.expiresInS = null;
    st.error = null;
    this.resendAt = 0;
    this.render();
    this.deps.view.focus('phone', false);
  }

  /** Repeat the request that got no answer. */
  retry(): void {
    const st = this.st;
    if (st.busy !== null || this.lastRequest === null || st.error?.retryable !== true) return;
    void this.send(this.lastRequest);
  }

  // ---- internals -----------------------------------------------------------------------

  private async send(request: PhoneRequest): Promise<void> {
    const st = this.st;
    this.lastRequest = request;
    st.error = null;
    if (!this.deps.isConnected()) {
      // Not emitted at all: socket.io would buffer it and send it whenever it reconnects.
      this.fail({ code: 'offline', text: this.deps.strings.smsErrOffline, retryable: true, attemptsLeft: null }, 'retry', false);
      return;
    }
    const seq = ++this.seq;
    st.busy = request.kind;
    this.render();
    let raw: unknown;
    try {
      raw =
        request.kind === 'verify'
          ? await this.deps.verifyPhone({ code: request.code })
          : await this.deps.linkPhone({ phone: request.phone });
    } catch {
      if (seq !== this.seq) return;
      this.fail({ code: 'offline', text: this.deps.strings.smsErrOffline, retryable: true, attemptsLeft: null }, 'retry', false);
      return;
    }
    if (seq !== this.seq) return;
    st.busy = null;
    if (request.kind === 'verify') this.verified(parseVerifyPhoneAck(raw));
    else this.linked(parseLinkPhoneAck(raw), request.kind);
  }

  private linked(ack: LinkPhoneAck, kind: 'link' | 'resend'): void {
    const st = this.st;
    if (ack.ok) {
      st.step = 'code';
      st.open = true;
      st.pendingMasked = ack.masked;
      st.expiresInS = ack.expiresInS;
      st.error = null;
      this.resendAt = this.now() + this.resendAfterMs;
      this.render();
      this.deps.view.focus('code', true);
      return;
    }
    const fallback = ack.code === 'invalid_phone' ? this.deps.strings.smsErrPhoneInvalid : this.deps.strings.errGeneric;
    const retryable = RETRYABLE.has(ack.code);
    const error = { code: ack.code, text: shown(ack.message, fallback), retryable, attemptsLeft: null };
    this.fail(error, retryable ? 'retry' : kind === 'link' ? 'phone' : 'code', false);
  }

  private verified(ack: VerifyPhoneAck): void {
    const st = this.st;
    if (ack.ok) {
      st.step = 'linked';
      st.open = false;
      st.linkedMasked = ack.masked;
      st.pendingMasked = null;
      st.expiresInS = null;
      st.error = null;
      this.resendAt = 0;
      this.lastRequest = null;
      this.render();
      this.deps.view.focus('change', false);
      return;
    }
    const s = this.deps.strings;
    const newCode = NEEDS_NEW_CODE.has(ack.code);
    // The old code is dead: a new one may be asked for straight away.
    if (newCode) this.resendAt = 0;
    const fallback = ack.code === 'invalid_code' ? s.smsErrCodeWrong : newCode ? s.smsErrNewCode : s.errGeneric;
    const retryable = RETRYABLE.has(ack.code);
    const error = { code: ack.code, text: shown(ack.message, fallback), retryable, attemptsLeft: ack.attemptsLeft };
    this.fail(error, retryable ? 'retry' : newCode ? 'resend' : 'code', !retryable);
  }

  private fail(error: PhoneLinkError, focus: PhoneLinkFocus, clear: boolean): void {
    this.st.busy = null;
    this.st.error = error;
    this.render();
    this.deps.view.focus(focus, clear);
  }

  private localError(text: string, focus: PhoneLinkFocus): void {
    this.fail({ code: 'local', text, retryable: false, attemptsLeft: null }, focus, false);
  }

  private reset(): void {
    this.seq++;
    this.st = initialState();
    this.resendAt = 0;
    this.lastRequest = null;
  }

  private render(): void {
    const state = this.state;
    this.deps.view.render(state);
    this.clearTick();
    // Count down to the moment a new code may be asked for, a second at a time.
    if (state.resendInS > 0) {
      const left = this.resendAt - this.now();
      this.tickTimer = setTimeout(() => {
        this.tickTimer = null;
        this.render();
      }, left % 1000 || 1000);
    }
  }

  private clearTick(): void {
    if (this.tickTimer !== null) clearTimeout(this.tickTimer);
    this.tickTimer = null;
  }
}

/** The server's message (already in the patient's language), or a local text when empty. */
function shown(message: string, fallback: string): string {
  return message.trim() !== '' ? message : fallback;
}

/** "We sent a 6-digit code to •••• 4567. It expires in 10 min." */
export function codeSentText(s: Strings, masked: string, expiresInS: number | null): string {
  const sent = format(s.smsCodeSent, { masked });
  return expiresInS === null ? sent : `${sent} ${format(s.smsCodeExpires, { min: Math.ceil(expiresInS / 60) })}`;
}
