import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { strings } from './i18n';
import {
  codeSentText,
  normalizeCode,
  parseLinkedPhone,
  parseLinkPhoneAck,
  parseVerifyPhoneAck,
  PhoneLinkController,
  type PhoneLinkFocus,
  type PhoneLinkState,
} from './phoneLink';

const en = strings('en');

describe('phone link parsers', () => {
  it('reads the masked linked number from a session payload', () => {
    expect(parseLinkedPhone({ token: 't', conversation_id: 'c', linked_phone: '•••• 4567' })).toBe('•••• 4567');
    expect(parseLinkedPhone({ token: 't', linked_phone: '  •••• 4567 ' })).toBe('•••• 4567');
    for (const bad of [null, 'x', [], { token: 't' }, { linked_phone: null }, { linked_phone: '' }, { linked_phone: '   ' }, { linked_phone: 4567 }, { linked_phone: 'x'.repeat(65) }]) {
      expect(parseLinkedPhone(bad), JSON.stringify(bad)).toBeNull();
    }
  });

  it('parses link_phone acks', () => {
    expect(parseLinkPhoneAck({ ok: true, masked: '•••• 4567', expires_in_s: 600 })).toEqual({
      ok: true,
      masked: '•••• 4567',
      expiresInS: 600,
    });
    // A success without a usable expiry still means a code was sent.
    expect(parseLinkPhoneAck({ ok: true, masked: '•••• 4567' })).toEqual({ ok: true, masked: '•••• 4567', expiresInS: null });
    expect(parseLinkPhoneAck({ ok: true, masked: '•••• 4567', expires_in_s: '600' })).toMatchObject({ expiresInS: null });
    expect(parseLinkPhoneAck({ ok: true, masked: '•••• 4567', expires_in_s: -1 })).toMatchObject({ expiresInS: null });
    expect(parseLinkPhoneAck({ ok: true, masked: '•••• 4567', expires_in_s: Infinity })).toMatchObject({ expiresInS: null });
    expect(parseLinkPhoneAck({ ok: false, code: 'opted_out', message: 'Text START first.' })).toEqual({
      ok: false,
      code: 'opted_out',
      message: 'Text START first.',
    });
    expect(parseLinkPhoneAck({ ok: false })).toEqual({ ok: false, code: 'error', message: '' });
    expect(parseLinkPhoneAck({ ok: false, code: 7, message: ['x'] })).toEqual({ ok: false, code: 'error', message: '' });
    for (const bad of [undefined, null, 'ok', [true], { ok: 'true', masked: 'x' }, { ok: true }, { ok: true, masked: '' }, { ok: true, masked: 5 }]) {
      expect(parseLinkPhoneAck(bad), JSON.stringify(bad)).toMatchObject({ ok: false, code: 'bad_response' });
    }
  });

  it('parses verify_phone acks', () => {
    expect(parseVerifyPhoneAck({ ok: true, masked: '•••• 4567' })).toEqual({ ok: true, masked: '•••• 4567' });
    expect(parseVerifyPhoneAck({ ok: false, code: 'invalid_code', message: 'Wrong code.', attempts_left: 2 })).toEqual({
      ok: false,
      code: 'invalid_code',
      message: 'Wrong code.',
      attemptsLeft: 2,
    });
    expect(parseVerifyPhoneAck({ ok: false, code: 'invalid_code', message: 'Wrong code.', attempts_left: 0 })).toMatchObject({
      attemptsLeft: 0,
    });
    for (const attempts of [undefined, null, '2', 1.5, -1, NaN]) {
      expect(parseVerifyPhoneAck({ ok: false, code: 'expired', message: 'm', attempts_left: attempts })).toMatchObject({
        code: 'expired',
        attemptsLeft: null,
      });
    }
    for (const bad of [undefined, {}, { ok: true }, { ok: true, masked: null }, 'yes']) {
      expect(parseVerifyPhoneAck(bad)).toEqual({ ok: false, code: 'bad_response', message: '', attemptsLeft: null });
    }
  });

  it('normalises typed or pasted codes', () => {
    expect(normalizeCode('123456')).toBe('123456');
    expect(normalizeCode(' 123 456 ')).toBe('123456');
    expect(normalizeCode('123-456')).toBe('123456');
    expect(normalizeCode('１２３４５６')).toBe('123456');
    for (const bad of ['', '12345', '1234567', '12a456', '١٢٣٤٥٦', '123456\u0000']) {
      expect(normalizeCode(bad), bad).toBeNull();
    }
  });

  it('words the code-sent hint with and without an expiry', () => {
    expect(codeSentText(en, '•••• 4567', 600)).toBe('We sent a 6-digit code to •••• 4567. It expires in 10 min.');
    expect(codeSentText(en, '•••• 4567', 61)).toBe('We sent a 6-digit code to •••• 4567. It expires in 2 min.');
    expect(codeSentText(en, '•••• 4567', null)).toBe('We sent a 6-digit code to •••• 4567.');
  });
});

interface Call<T> {
  request: T;
  resolve(ack: unknown): void;
  reject(err: Error): void;
}

/** A fake socket + page: records requests, renders and focus moves; acks on demand. */
function setup() {
  const links: Call<{ phone: string }>[] = [];
  const verifies: Call<{ code: string }>[] = [];
  const renders: PhoneLinkState[] = [];
  const focus: [PhoneLinkFocus, boolean][] = [];
  let connected = true;
  const ctl = new PhoneLinkController({
    view: {
      render: (state) => renders.push({ ...state }),
      focus: (target, clear) => focus.push([target, clear]),
    },
    strings: en,
    isConnected: () => connected,
    linkPhone: (request) => new Promise((resolve, reject) => links.push({ request, resolve, reject })),
    verifyPhone: (request) => new Promise((resolve, reject) => verifies.push({ request, resolve, reject })),
  });
  ctl.start();
  return {
    ctl,
    links,
    verifies,
    renders,
    focus,
    /** The state the page shows now. */
    shown: () => renders.at(-1)!,
    lastFocus: () => focus.at(-1),
    setConnected(c: boolean) {
      connected = c;
    },
    session(linked: string | null = null, token = 'tok-1') {
      ctl.handleSession({ token, conversation_id: `conv-${token}`, linked_phone: linked });
    },
  };
}

const flush = async () => {
  await vi.advanceTimersByTimeAsync(0);
};

/** Open the panel and get a code sent to •••• 4567. */
async function toCodeStep(t: ReturnType<typeof setup>) {
  t.session();
  t.ctl.toggle();
  t.ctl.submitPhone('(555) 123-4567');
  t.links.at(-1)!.resolve({ ok: true, masked: '•••• 4567', expires_in_s: 600 });
  await flush();
}

describe('PhoneLinkController', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('stays hidden until a session says whether a phone is linked', () => {
    const t = setup();
    expect(t.shown()).toMatchObject({ ready: false, step: 'phone', open: false });
    t.session(null);
    expect(t.shown()).toMatchObject({ ready: true, step: 'phone', open: false, linkedMasked: null });

    const linked = setup();
    linked.session('•••• 4567');
    expect(linked.shown()).toMatchObject({ ready: true, step: 'linked', linkedMasked: '•••• 4567' });
    expect(linked.focus).toEqual([]);
  });

  it('links a phone: number, code sent, code confirmed', async () => {
    const t = setup();
    t.session();
    t.ctl.toggle();
    expect(t.shown()).toMatchObject({ open: true, step: 'phone' });
    expect(t.lastFocus()).toEqual(['phone', false]);

    t.ctl.submitPhone('  +1 (555) 123-4567 ');
    expect(t.links.map((l) => l.request)).toEqual([{ phone: '+1 (555) 123-4567' }]);
    expect(t.shown()).toMatchObject({ busy: 'link', step: 'phone', error: null });

    t.links[0]!.resolve({ ok: true, masked: '•••• 4567', expires_in_s: 600 });
    await flush();
    expect(t.shown()).toMatchObject({
      busy: null,
      step: 'code',
      open: true,
      pendingMasked: '•••• 4567',
      expiresInS: 600,
      resendInS: 30,
      error: null,
    });
    expect(t.lastFocus()).toEqual(['code', true]);

    t.ctl.submitCode(' 123 456 ');
    expect(t.verifies.map((v) => v.request)).toEqual([{ code: '123456' }]);
    expect(t.shown()).toMatchObject({ busy: 'verify' });
    t.verifies[0]!.resolve({ ok: true, masked: '•••• 4567' });
    await flush();
    expect(t.shown()).toMatchObject({
      busy: null,
      step: 'linked',
      open: false,
      linkedMasked: '•••• 4567',
      pendingMasked: null,
      resendInS: 0,
    });
    expect(t.lastFocus()).toEqual(['change', false]);
  });

  it('refuses an empty number or a malformed code without asking the server', async () => {
    const t = setup();
    t.session();
    t.ctl.toggle();
    t.ctl.submitPhone('   ');
    expect(t.links).toEqual([]);
    expect(t.shown().error).toMatchObject({ code: 'local', text: en.smsErrPhoneEmpty, retryable: false });
    t.ctl.submitPhone('1'.repeat(41));
    expect(t.links).toEqual([]);
    expect(t.shown().error).toMatchObject({ text: en.smsErrPhoneInvalid });

    t.ctl.submitPhone('5551234567');
    expect(t.shown().error).toBeNull();
    t.links[0]!.resolve({ ok: true, masked: '•••• 4567', expires_in_s: 600 });
    await flush();
    for (const bad of ['', '12345', 'abcdef', '1234567']) {
      t.ctl.submitCode(bad);
      expect(t.shown().error).toMatchObject({ code: 'local', text: en.smsErrCodeFormat });
      expect(t.lastFocus()).toEqual(['code', false]);
    }
    expect(t.verifies).toEqual([]);
  });

  it('ignores every action while an ack is awaited', () => {
    const t = setup();
    t.session();
    t.ctl.toggle();
    t.ctl.submitPhone('5551234567');
    t.ctl.submitPhone('5559999999');
    t.ctl.toggle();
    t.ctl.retry();
    expect(t.links).toHaveLength(1);
    expect(t.shown()).toMatchObject({ busy: 'link', open: true });
  });

  it('counts down before a new code may be asked for, then resends to the same number', async () => {
    const t = setup();
    await toCodeStep(t);
    expect(t.shown().resendInS).toBe(30);
    t.ctl.resend();
    expect(t.links).toHaveLength(1);

    await vi.advanceTimersByTimeAsync(1000);
    expect(t.shown().resendInS).toBe(29);
    await vi.advanceTimersByTimeAsync(28000);
    expect(t.shown().resendInS).toBe(1);
    t.ctl.resend();
    expect(t.links).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1000);
    expect(t.shown().resendInS).toBe(0);
    const renders = t.renders.length;
    await vi.advanceTimersByTimeAsync(5000);
    expect(t.renders).toHaveLength(renders); // the countdown timer stopped

    t.ctl.resend();
    expect(t.links.map((l) => l.request)).toEqual([{ phone: '(555) 123-4567' }, { phone: '(555) 123-4567' }]);
    expect(t.shown()).toMatchObject({ busy: 'resend', step: 'code' });
    t.links[1]!.resolve({ ok: true, masked: '•••• 4567', expires_in_s: 300 });
    await flush();
    expect(t.shown()).toMatchObject({ busy: null, step: 'code', resendInS: 30, expiresInS: 300 });
  });

  it('shows the server message for a refused number and stays on the number', async () => {
    const t = setup();
    t.session();
    t.ctl.toggle();
    t.ctl.submitPhone('5551234567');
    t.links[0]!.resolve({ ok: false, code: 'opted_out', message: 'This number replied STOP. Text START to 55555 first.' });
    await flush();
    expect(t.shown()).toMatchObject({
      busy: null,
      step: 'phone',
      error: { code: 'opted_out', text: 'This number replied STOP. Text START to 55555 first.', retryable: false },
    });
    expect(t.lastFocus()).toEqual(['phone', false]);

    // No message: a local text instead of an empty error.
    t.ctl.submitPhone('12');
    t.links[1]!.resolve({ ok: false, code: 'invalid_phone', message: '' });
    await flush();
    expect(t.shown().error).toMatchObject({ code: 'invalid_phone', text: en.smsErrPhoneInvalid });
    t.ctl.submitPhone('5551234567');
    t.links[2]!.resolve({ ok: false, code: 'rate_limited', message: ' ' });
    await flush();
    expect(t.shown().error).toMatchObject({ code: 'rate_limited', text: en.errGeneric, retryable: false });

    // Trouble sending texts is worth another try.
    t.ctl.submitPhone('5551234567');
    t.links[3]!.resolve({ ok: false, code: 'sms_unavailable', message: 'Texts are not available right now.' });
    await flush();
    expect(t.shown().error).toMatchObject({ code: 'sms_unavailable', retryable: true });
    expect(t.lastFocus()).toEqual(['retry', false]);
    t.ctl.retry();
    expect(t.links[4]?.request).toEqual({ phone: '5551234567' });
  });

  it('keeps the patient on the code after a wrong one, with the attempts left', async () => {
    const t = setup();
    await toCodeStep(t);
    t.ctl.submitCode('111111');
    t.verifies[0]!.resolve({ ok: false, code: 'invalid_code', message: 'That code is wrong. 2 tries left.', attempts_left: 2 });
    await flush();
    expect(t.shown()).toMatchObject({
      step: 'code',
      busy: null,
      resendInS: 30,
      error: { code: 'invalid_code', text: 'That code is wrong. 2 tries left.', attemptsLeft: 2, retryable: false },
    });
    expect(t.lastFocus()).toEqual(['code', true]);
  });

  it('offers a new code straight away when the old one is dead', async () => {
    for (const code of ['locked', 'expired', 'no_pending_code']) {
      const t = setup();
      await toCodeStep(t);
      t.ctl.submitCode('111111');
      t.verifies[0]!.resolve({ ok: false, code, message: `msg ${code}` });
      await flush();
      expect(t.shown()).toMatchObject({ step: 'code', resendInS: 0, error: { code, text: `msg ${code}` } });
      expect(t.lastFocus()).toEqual(['resend', true]);
      t.ctl.resend();
      expect(t.links).toHaveLength(2);
    }
  });

  it('turns an unanswered request into an error that can be retried', async () => {
    const t = setup();
    await toCodeStep(t);
    t.ctl.submitCode('123456');
    t.verifies[0]!.reject(new Error('operation has timed out'));
    await flush();
    expect(t.shown()).toMatchObject({ busy: null, step: 'code', error: { code: 'offline', text: en.smsErrOffline, retryable: true } });
    expect(t.lastFocus()).toEqual(['retry', false]);

    t.ctl.retry();
    expect(t.verifies.map((v) => v.request)).toEqual([{ code: '123456' }, { code: '123456' }]);
    expect(t.shown()).toMatchObject({ busy: 'verify', error: null });
    t.verifies[1]!.resolve({ ok: true, masked: '•••• 4567' });
    await flush();
    expect(t.shown()).toMatchObject({ step: 'linked', linkedMasked: '•••• 4567' });
    // Nothing left to retry.
    t.ctl.retry();
    expect(t.verifies).toHaveLength(2);
  });

  it('fails at once on disconnect and ignores the ack that comes late', async () => {
    const t = setup();
    t.session();
    t.ctl.toggle();
    t.ctl.submitPhone('5551234567');
    t.setConnected(false);
    t.ctl.handleDisconnect();
    expect(t.shown()).toMatchObject({ busy: null, step: 'phone', error: { code: 'offline', retryable: true } });
    t.links[0]!.resolve({ ok: true, masked: '•••• 4567', expires_in_s: 600 });
    await flush();
    expect(t.shown()).toMatchObject({ step: 'phone', error: { code: 'offline' } });

    // Still offline: nothing is emitted (socket.io would send it on reconnect), same error.
    t.ctl.retry();
    expect(t.links).toHaveLength(1);
    expect(t.shown().error).toMatchObject({ code: 'offline', retryable: true });

    t.setConnected(true);
    t.session();
    t.ctl.retry();
    expect(t.links.map((l) => l.request)).toEqual([{ phone: '5551234567' }, { phone: '5551234567' }]);
  });

  it('does nothing on disconnect when no ack is awaited', () => {
    const t = setup();
    t.session();
    const renders = t.renders.length;
    t.ctl.handleDisconnect();
    expect(t.renders).toHaveLength(renders);
  });

  it('treats a malformed success ack as an error worth retrying', async () => {
    const t = setup();
    t.session();
    t.ctl.toggle();
    t.ctl.submitPhone('5551234567');
    t.links[0]!.resolve({ ok: true });
    await flush();
    expect(t.shown()).toMatchObject({ step: 'phone', error: { code: 'bad_response', text: en.errGeneric, retryable: true } });
  });

  it('goes back to the number with "use another number"', async () => {
    const t = setup();
    await toCodeStep(t);
    t.ctl.useAnotherNumber();
    expect(t.shown()).toMatchObject({ step: 'phone', open: true, pendingMasked: null, resendInS: 0, error: null });
    expect(t.lastFocus()).toEqual(['phone', false]);
    t.ctl.submitPhone('5550000000');
    expect(t.links.at(-1)?.request).toEqual({ phone: '5550000000' });
  });

  it('changes a linked number, and collapsing abandons the change', async () => {
    const t = setup();
    t.session('•••• 4567');
    t.ctl.toggle(); // the toggle is not shown while linked
    expect(t.shown()).toMatchObject({ step: 'linked', open: false });
    t.ctl.changeNumber();
    expect(t.shown()).toMatchObject({ step: 'phone', open: true, linkedMasked: '•••• 4567' });
    expect(t.lastFocus()).toEqual(['phone', false]);
    t.ctl.toggle();
    expect(t.shown()).toMatchObject({ step: 'linked', open: false, linkedMasked: '•••• 4567' });

    t.ctl.changeNumber();
    t.ctl.submitPhone('5550000000');
    t.links[0]!.resolve({ ok: true, masked: '•••• 0000', expires_in_s: 600 });
    await flush();
    t.ctl.submitCode('654321');
    t.verifies[0]!.resolve({ ok: true, masked: '•••• 0000' });
    await flush();
    expect(t.shown()).toMatchObject({ step: 'linked', linkedMasked: '•••• 0000' });
  });

  it('keeps the code step open across a collapse when nothing is linked yet', async () => {
    const t = setup();
    await toCodeStep(t);
    t.ctl.toggle();
    expect(t.shown()).toMatchObject({ open: false, step: 'code' });
    t.ctl.toggle();
    expect(t.shown()).toMatchObject({ open: true, step: 'code' });
    expect(t.lastFocus()).toEqual(['code', false]);
  });

  it('follows the session on reconnect without interrupting the patient', async () => {
    const t = setup();
    await toCodeStep(t);
    t.session('•••• 9999'); // e.g. linked from another tab: the code entry stays
    expect(t.shown()).toMatchObject({ step: 'code', linkedMasked: '•••• 9999' });

    const u = setup();
    u.session('•••• 4567');
    u.session(null); // unlinked on the server (e.g. STOP)
    expect(u.shown()).toMatchObject({ step: 'phone', linkedMasked: null, open: false });
    u.session('•••• 4567');
    expect(u.shown()).toMatchObject({ step: 'linked' });
  });

  it('starts over with a new conversation and ignores acks from the old one', async () => {
    const t = setup();
    t.session(null, 'tok-1');
    t.ctl.toggle();
    t.ctl.submitPhone('5551234567');
    t.session(null, 'tok-2');
    expect(t.shown()).toMatchObject({ ready: true, step: 'phone', open: false, busy: null, phone: '', error: null });
    t.links[0]!.resolve({ ok: true, masked: '•••• 4567', expires_in_s: 600 });
    await flush();
    expect(t.shown()).toMatchObject({ step: 'phone', pendingMasked: null });
  });

  it('ignores unusable session payloads', () => {
    const t = setup();
    t.ctl.handleSession({ linked_phone: '•••• 4567' });
    t.ctl.handleSession(null);
    expect(t.shown()).toMatchObject({ ready: false, linkedMasked: null });
  });
});
