// @vitest-environment happy-dom
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { strings, type Lang } from './i18n';
import { PhoneLinkController } from './phoneLink';
import { PhoneLinkPanel } from './phoneLinkView';

interface Call {
  event: 'link_phone' | 'verify_phone';
  request: unknown;
  resolve(ack: unknown): void;
  reject(err: Error): void;
}

/** The real controller and panel in a fresh document, over a fake socket. */
function mount(lang: Lang = 'en') {
  document.body.replaceChildren();
  const root = document.createElement('section');
  root.id = 'sms-link';
  document.body.append(root);
  const calls: Call[] = [];
  const emit = (event: Call['event']) => (request: unknown) =>
    new Promise<unknown>((resolve, reject) => calls.push({ event, request, resolve, reject }));
  const s = strings(lang);
  const panel = new PhoneLinkPanel(root, s, {
    toggle: () => ctl.toggle(),
    submitPhone: (raw) => ctl.submitPhone(raw),
    submitCode: (raw) => ctl.submitCode(raw),
    resend: () => ctl.resend(),
    useAnotherNumber: () => ctl.useAnotherNumber(),
    changeNumber: () => ctl.changeNumber(),
    retry: () => ctl.retry(),
  });
  const ctl: PhoneLinkController = new PhoneLinkController({
    view: panel,
    strings: s,
    isConnected: () => true,
    linkPhone: emit('link_phone'),
    verifyPhone: emit('verify_phone'),
  });
  ctl.start();
  const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
  return { root, ctl, calls, $ };
}

/** Visible = neither it nor an ancestor has the `hidden` attribute. */
function visible(node: HTMLElement): boolean {
  for (let n: HTMLElement | null = node; n; n = n.parentElement) if (n.hidden) return false;
  return true;
}

function type(input: HTMLInputElement, value: string): void {
  input.value = value;
  input.dispatchEvent(new Event('input', { bubbles: true }));
}

const flush = async () => {
  await vi.advanceTimersByTimeAsync(0);
};

describe('PhoneLinkPanel (DOM)', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('builds accessible inputs with the right autofill hints', () => {
    const { $ } = mount();
    const phone = $<HTMLInputElement>('sms-phone');
    expect(phone.type).toBe('tel');
    expect(phone.getAttribute('autocomplete')).toBe('tel');
    expect(phone.getAttribute('inputmode')).toBe('tel');
    expect(document.querySelector('label[for="sms-phone"]')?.textContent).toBe('Mobile phone number');
    const code = $<HTMLInputElement>('sms-code');
    expect(code.getAttribute('autocomplete')).toBe('one-time-code');
    expect(code.getAttribute('inputmode')).toBe('numeric');
    expect(code.getAttribute('maxlength')).toBe('6');
    expect(code.getAttribute('pattern')).toBe('[0-9]{6}');
    expect(document.querySelector('label[for="sms-code"]')?.textContent).toBe('6-digit code');
    expect($('sms-toggle').getAttribute('aria-controls')).toBe('sms-panel');
    expect($('sms-status').getAttribute('role')).toBe('status');
    expect($('sms-error').getAttribute('role')).toBe('alert');
    expect($('sms-linked').getAttribute('role')).toBe('status');
  });

  it('walks through linking a phone', async () => {
    const { root, ctl, calls, $ } = mount();
    expect(root.hidden).toBe(true);
    ctl.handleSession({ token: 't', conversation_id: 'c', linked_phone: null });
    expect(root.hidden).toBe(false);
    const toggle = $<HTMLButtonElement>('sms-toggle');
    expect(toggle.textContent).toBe('Continue by text message');
    expect(toggle.getAttribute('aria-expanded')).toBe('false');
    expect(visible($('sms-panel'))).toBe(false);

    toggle.click();
    expect(toggle.getAttribute('aria-expanded')).toBe('true');
    expect(visible($('sms-phone'))).toBe(true);
    expect(visible($('sms-code'))).toBe(false);
    expect(document.activeElement).toBe($('sms-phone'));

    type($('sms-phone'), '(555) 123-4567');
    $<HTMLButtonElement>('sms-send-code').click();
    expect(calls.map((c) => [c.event, c.request])).toEqual([['link_phone', { phone: '(555) 123-4567' }]]);
    expect($<HTMLButtonElement>('sms-send-code').disabled).toBe(true);
    expect(toggle.disabled).toBe(true);
    expect($<HTMLInputElement>('sms-phone').readOnly).toBe(true);
    expect($('sms-status').textContent).toBe('Sending the code…');
    expect(root.dataset.busy).toBe('link');

    calls[0]!.resolve({ ok: true, masked: '•••• 4567', expires_in_s: 600 });
    await flush();
    expect(root.dataset.step).toBe('code');
    expect(root.dataset.busy).toBeUndefined();
    expect(visible($('sms-phone'))).toBe(false);
    expect(visible($('sms-code'))).toBe(true);
    expect(document.activeElement).toBe($('sms-code'));
    expect($('sms-code-sent').textContent).toBe('We sent a 6-digit code to •••• 4567. It expires in 10 min.');
    expect($('sms-status').textContent).toBe('');
    expect($<HTMLButtonElement>('sms-resend').disabled).toBe(true);
    expect($('sms-resend-wait').textContent).toBe('You can ask for a new code in 30 s.');
    await vi.advanceTimersByTimeAsync(3000);
    expect($('sms-resend-wait').textContent).toBe('You can ask for a new code in 27 s.');

    type($('sms-code'), '123456');
    $<HTMLButtonElement>('sms-confirm').click();
    expect(calls[1]).toMatchObject({ event: 'verify_phone', request: { code: '123456' } });
    expect($<HTMLButtonElement>('sms-confirm').disabled).toBe(true);
    expect($<HTMLButtonElement>('sms-other-number').disabled).toBe(true);
    expect($('sms-status').textContent).toBe('Checking the code…');
    calls[1]!.resolve({ ok: false, code: 'invalid_code', message: 'Wrong code. 2 tries left.', attempts_left: 2 });
    await flush();
    expect($('sms-error').textContent).toBe('Wrong code. 2 tries left.');
    expect($('sms-error').dataset.code).toBe('invalid_code');
    expect($('sms-error').dataset.attemptsLeft).toBe('2');
    expect($('sms-code').getAttribute('aria-invalid')).toBe('true');
    expect($<HTMLInputElement>('sms-code').value).toBe('');
    expect(visible($('sms-retry'))).toBe(false);

    type($('sms-code'), '654321');
    $<HTMLButtonElement>('sms-confirm').click();
    calls[2]!.resolve({ ok: true, masked: '•••• 4567' });
    await flush();
    expect(root.dataset.step).toBe('linked');
    expect($('sms-linked').textContent).toBe('Texts go to •••• 4567');
    expect(visible($('sms-change'))).toBe(true);
    expect(visible(toggle)).toBe(false);
    expect(visible($('sms-panel'))).toBe(false);
    expect($('sms-error').textContent).toBe('');
    expect(document.activeElement).toBe($('sms-change'));
  });

  it('shows a linked number from the session and lets the patient change it', () => {
    const { ctl, $ } = mount();
    ctl.handleSession({ token: 't', conversation_id: 'c', linked_phone: '•••• 4567' });
    expect($('sms-linked').textContent).toBe('Texts go to •••• 4567');
    expect(visible($('sms-toggle'))).toBe(false);
    $<HTMLButtonElement>('sms-change').click();
    expect($('sms-linked').textContent).toBe('');
    expect(visible($('sms-phone'))).toBe(true);
    expect(document.activeElement).toBe($('sms-phone'));
    $<HTMLButtonElement>('sms-toggle').click();
    expect($('sms-linked').textContent).toBe('Texts go to •••• 4567');
  });

  it('offers "Try again" after an ack timeout', async () => {
    const { ctl, calls, $ } = mount();
    ctl.handleSession({ token: 't', conversation_id: 'c', linked_phone: null });
    $<HTMLButtonElement>('sms-toggle').click();
    type($('sms-phone'), '5551234567');
    $<HTMLButtonElement>('sms-send-code').click();
    calls[0]!.reject(new Error('operation has timed out'));
    await flush();
    expect($('sms-error').textContent).toBe(strings('en').smsErrOffline);
    const retry = $<HTMLButtonElement>('sms-retry');
    expect(visible(retry)).toBe(true);
    expect(retry.textContent).toBe('Try again');
    expect(document.activeElement).toBe(retry);
    expect($<HTMLButtonElement>('sms-send-code').disabled).toBe(false);
    retry.click();
    expect(calls.map((c) => c.request)).toEqual([{ phone: '5551234567' }, { phone: '5551234567' }]);
    expect(retry.disabled).toBe(true);
  });

  it('goes back to the number and offers a new code after the 30 s', async () => {
    const { ctl, calls, $ } = mount();
    ctl.handleSession({ token: 't', conversation_id: 'c', linked_phone: null });
    $<HTMLButtonElement>('sms-toggle').click();
    type($('sms-phone'), '5551234567');
    $<HTMLButtonElement>('sms-send-code').click();
    calls[0]!.resolve({ ok: true, masked: '•••• 4567', expires_in_s: 600 });
    await flush();
    await vi.advanceTimersByTimeAsync(30000);
    expect($<HTMLButtonElement>('sms-resend').disabled).toBe(false);
    expect($('sms-resend-wait').textContent).toBe('');
    $<HTMLButtonElement>('sms-resend').click();
    expect(calls[1]).toMatchObject({ event: 'link_phone', request: { phone: '5551234567' } });
    calls[1]!.resolve({ ok: true, masked: '•••• 4567', expires_in_s: 600 });
    await flush();

    $<HTMLButtonElement>('sms-other-number').click();
    expect(visible($('sms-phone'))).toBe(true);
    expect($<HTMLInputElement>('sms-phone').value).toBe('5551234567');
    expect(document.activeElement).toBe($('sms-phone'));
  });

  it('puts server text in the page as text, never as markup', async () => {
    const { ctl, calls, $ } = mount();
    const hostile = '<img src=x onerror="alert(1)"><b>STOP</b>';
    ctl.handleSession({ token: 't', conversation_id: 'c', linked_phone: null });
    $<HTMLButtonElement>('sms-toggle').click();
    type($('sms-phone'), '5551234567');
    $<HTMLButtonElement>('sms-send-code').click();
    calls[0]!.resolve({ ok: false, code: 'opted_out', message: hostile });
    await flush();
    expect($('sms-error').textContent).toBe(hostile);
    $<HTMLButtonElement>('sms-send-code').click();
    calls[1]!.resolve({ ok: true, masked: '<i>•••• 4567</i>\u202E', expires_in_s: 600 });
    await flush();
    expect($('sms-code-sent').textContent).toContain('<i>•••• 4567</i>.');
    expect(document.querySelector('#sms-link img, #sms-link b, #sms-link i')).toBeNull();
  });

  it('speaks Spanish', () => {
    const { ctl, $ } = mount('es');
    ctl.handleSession({ token: 't', conversation_id: 'c', linked_phone: null });
    expect($('sms-toggle').textContent).toBe('Continuar por mensaje de texto');
    expect($('sms-send-code').textContent).toBe('Enviar código');
    expect($('sms-confirm').textContent).toBe('Confirmar');
    expect($('sms-other-number').textContent).toBe('Usar otro número');
    expect($('sms-link').getAttribute('aria-label')).toBe('Mensajes de texto');
    ctl.handleSession({ token: 't', conversation_id: 'c', linked_phone: '•••• 4567' });
    expect($('sms-linked').textContent).toBe('Los mensajes de texto van al •••• 4567');
  });
});
