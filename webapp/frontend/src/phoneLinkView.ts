import { format, type Strings } from './i18n';
import { CODE_LENGTH, codeSentText, type PhoneLinkFocus, type PhoneLinkState, type PhoneLinkView } from './phoneLink';
import { stripBidiControls } from './text';

// The "Continue by text message" control, built into the (empty) #sms-link section of
// index.html. Server data (masked numbers, error messages) only reaches the DOM through
// textContent and attribute setters; no innerHTML.

export interface PhoneLinkActions {
  toggle(): void;
  submitPhone(raw: string): void;
  submitCode(raw: string): void;
  resend(): void;
  useAnotherNumber(): void;
  changeNumber(): void;
  retry(): void;
}

/** Longest phone input the field takes (formatted international numbers fit easily). */
const PHONE_MAXLENGTH = 32;

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  id: string | null,
  className: string,
  text: string | null = null,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (id !== null) node.id = id;
  node.className = className;
  if (text !== null) node.textContent = text;
  return node;
}

function button(id: string, className: string, text: string, type: 'button' | 'submit' = 'button'): HTMLButtonElement {
  const b = el('button', id, className, text);
  b.type = type;
  return b;
}

function setText(node: Element, text: string): void {
  if (node.textContent !== text) node.textContent = text;
}

function setAttr(node: Element, name: string, value: string | null): void {
  if (value === null) node.removeAttribute(name);
  else if (node.getAttribute(name) !== value) node.setAttribute(name, value);
}

export class PhoneLinkPanel implements PhoneLinkView {
  private readonly linked: HTMLParagraphElement;
  private readonly change: HTMLButtonElement;
  private readonly toggle: HTMLButtonElement;
  private readonly panel: HTMLDivElement;
  private readonly phoneForm: HTMLFormElement;
  private readonly phoneInput: HTMLInputElement;
  private readonly sendCode: HTMLButtonElement;
  private readonly codeForm: HTMLFormElement;
  private readonly codeSent: HTMLParagraphElement;
  private readonly codeInput: HTMLInputElement;
  private readonly confirm: HTMLButtonElement;
  private readonly resend: HTMLButtonElement;
  private readonly resendWait: HTMLSpanElement;
  private readonly otherNumber: HTMLButtonElement;
  private readonly status: HTMLParagraphElement;
  private readonly error: HTMLParagraphElement;
  private readonly retry: HTMLButtonElement;

  constructor(
    private readonly root: HTMLElement,
    private readonly s: Strings,
    actions: PhoneLinkActions,
  ) {
    root.classList.add('sms-link');
    root.setAttribute('aria-label', s.smsRegion);
    root.hidden = true;

    // Linked: "Texts go to •••• 4567" (a live region, present from the start so the change is read).
    this.linked = el('p', 'sms-linked', 'sms-linked');
    this.linked.setAttribute('role', 'status');
    this.change = button('sms-change', 'sms-link-button', s.smsChange);
    this.change.hidden = true;
    const linkedRow = el('div', null, 'sms-linked-row');
    linkedRow.append(this.linked, this.change);

    this.toggle = button('sms-toggle', 'sms-toggle', s.smsToggle);
    this.toggle.setAttribute('aria-expanded', 'false');
    this.toggle.setAttribute('aria-controls', 'sms-panel');

    this.panel = el('div', 'sms-panel', 'sms-panel');
    this.panel.hidden = true;

    // Step 1: the number.
    this.phoneForm = el('form', 'sms-phone-form', 'sms-form');
    this.phoneForm.noValidate = true;
    const intro = el('p', 'sms-intro', 'sms-hint', s.smsIntro);
    const phoneLabel = el('label', null, 'sms-label', s.smsPhoneLabel);
    phoneLabel.htmlFor = 'sms-phone';
    this.phoneInput = el('input', 'sms-phone', 'sms-input');
    this.phoneInput.type = 'tel';
    this.phoneInput.name = 'phone';
    this.phoneInput.autocomplete = 'tel';
    this.phoneInput.inputMode = 'tel';
    this.phoneInput.maxLength = PHONE_MAXLENGTH;
    this.phoneInput.setAttribute('enterkeyhint', 'send');
    this.phoneInput.setAttribute('aria-describedby', 'sms-intro sms-error');
    this.sendCode = button('sms-send-code', 'sms-button', s.smsSendCode, 'submit');
    const phoneRow = el('div', null, 'sms-row');
    phoneRow.append(this.phoneInput, this.sendCode);
    this.phoneForm.append(intro, phoneLabel, phoneRow);

    // Step 2: the code.
    this.codeForm = el('form', 'sms-code-form', 'sms-form');
    this.codeForm.noValidate = true;
    this.codeForm.hidden = true;
    this.codeSent = el('p', 'sms-code-sent', 'sms-hint');
    const codeLabel = el('label', null, 'sms-label', s.smsCodeLabel);
    codeLabel.htmlFor = 'sms-code';
    this.codeInput = el('input', 'sms-code', 'sms-input sms-code-input');
    this.codeInput.type = 'text';
    this.codeInput.name = 'code';
    this.codeInput.autocomplete = 'one-time-code';
    this.codeInput.inputMode = 'numeric';
    this.codeInput.maxLength = CODE_LENGTH;
    this.codeInput.pattern = `[0-9]{${CODE_LENGTH}}`;
    this.codeInput.setAttribute('enterkeyhint', 'done');
    this.codeInput.setAttribute('aria-describedby', 'sms-code-sent sms-error');
    this.confirm = button('sms-confirm', 'sms-button', s.smsConfirm, 'submit');
    const codeRow = el('div', null, 'sms-row');
    codeRow.append(this.codeInput, this.confirm);
    this.resend = button('sms-resend', 'sms-link-button', s.smsResend);
    this.resend.setAttribute('aria-describedby', 'sms-resend-wait');
    this.resendWait = el('span', 'sms-resend-wait', 'sms-wait');
    this.otherNumber = button('sms-other-number', 'sms-link-button', s.smsOtherNumber);
    const codeActions = el('div', null, 'sms-actions');
    codeActions.append(this.resend, this.resendWait, this.otherNumber);
    this.codeForm.append(this.codeSent, codeLabel, codeRow, codeActions);

    // Progress ("Sending the code…") and errors, for both steps.
    this.status = el('p', 'sms-status', 'sms-status');
    this.status.setAttribute('role', 'status');
    this.error = el('p', 'sms-error', 'sms-error');
    this.error.setAttribute('role', 'alert');
    this.retry = button('sms-retry', 'sms-link-button', s.smsTryAgain);
    this.retry.hidden = true;
    const errorRow = el('div', null, 'sms-error-row');
    errorRow.append(this.error, this.retry);

    this.panel.append(this.phoneForm, this.codeForm, this.status, errorRow);
    root.replaceChildren(linkedRow, this.toggle, this.panel);

    this.toggle.addEventListener('click', () => actions.toggle());
    this.change.addEventListener('click', () => actions.changeNumber());
    this.phoneForm.addEventListener('submit', (event) => {
      event.preventDefault();
      actions.submitPhone(this.phoneInput.value);
    });
    this.codeForm.addEventListener('submit', (event) => {
      event.preventDefault();
      actions.submitCode(this.codeInput.value);
    });
    this.resend.addEventListener('click', () => actions.resend());
    this.otherNumber.addEventListener('click', () => actions.useAnotherNumber());
    this.retry.addEventListener('click', () => actions.retry());
  }

  render(state: Readonly<PhoneLinkState>): void {
    const s = this.s;
    const busy = state.busy !== null;
    const root = this.root;
    root.hidden = !state.ready;
    setAttr(root, 'data-step', state.step);
    setAttr(root, 'data-busy', state.busy);

    const isLinked = state.step === 'linked' && state.linkedMasked !== null;
    setText(this.linked, isLinked ? format(s.smsLinked, { masked: stripBidiControls(state.linkedMasked ?? '') }) : '');
    this.change.hidden = !isLinked;
    this.change.disabled = busy;

    this.toggle.hidden = isLinked;
    this.toggle.disabled = busy;
    setAttr(this.toggle, 'aria-expanded', String(state.open && !isLinked));
    this.panel.hidden = !state.open || isLinked;
    setAttr(this.panel, 'aria-busy', busy ? 'true' : null);

    const error = state.error;
    this.phoneForm.hidden = state.step !== 'phone';
    this.phoneInput.readOnly = busy;
    this.sendCode.disabled = busy;
    setAttr(this.phoneInput, 'aria-invalid', state.step === 'phone' && error !== null && !error.retryable ? 'true' : null);

    this.codeForm.hidden = state.step !== 'code';
    setText(
      this.codeSent,
      state.pendingMasked !== null ? codeSentText(s, stripBidiControls(state.pendingMasked), state.expiresInS) : '',
    );
    this.codeInput.readOnly = busy;
    this.confirm.disabled = busy;
    setAttr(this.codeInput, 'aria-invalid', state.step === 'code' && error !== null && !error.retryable ? 'true' : null);
    this.resend.disabled = busy || state.resendInS > 0;
    setText(this.resendWait, state.resendInS > 0 ? format(s.smsResendWait, { n: state.resendInS }) : '');
    this.otherNumber.disabled = busy;

    setText(
      this.status,
      state.busy === 'verify' ? s.smsCheckingCode : state.busy !== null ? s.smsSendingCode : '',
    );
    setText(this.error, error !== null ? stripBidiControls(error.text) : '');
    setAttr(this.error, 'data-code', error?.code ?? null);
    setAttr(this.error, 'data-attempts-left', error !== null && error.attemptsLeft !== null ? String(error.attemptsLeft) : null);
    this.retry.hidden = error?.retryable !== true;
    this.retry.disabled = busy;
  }

  focus(target: PhoneLinkFocus, clear: boolean): void {
    if (clear) this.codeInput.value = '';
    switch (target) {
      case 'phone':
        this.phoneInput.focus();
        this.phoneInput.select();
        return;
      case 'code':
        this.codeInput.focus();
        return;
      case 'resend':
        this.resend.focus();
        return;
      case 'change':
        this.change.focus();
        return;
      case 'retry':
        this.retry.focus();
        return;
    }
  }
}
