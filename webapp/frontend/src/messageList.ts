import type { Lang, Strings } from './i18n';
import type { QuickReply, Sender } from './protocol';
import { stripBidiControls } from './text';
import type { ViewItem } from './view';

// Renders ViewItems into the `role="log"` list. Message data only ever reaches the DOM
// through textContent and attribute setters: no innerHTML, no links, no images.

const NEAR_END_PX = 80;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  return node;
}

function setText(node: Element, text: string): void {
  if (node.textContent !== text) node.textContent = text;
}

function setAttr(node: Element, name: string, value: string | null): void {
  if (value === null) node.removeAttribute(name);
  else if (node.getAttribute(name) !== value) node.setAttribute(name, value);
}

export function senderPrefix(s: Strings, sender: Sender): string {
  switch (sender) {
    case 'patient':
      return s.youSaid;
    case 'bot':
      return s.assistantSaid;
    case 'staff':
      return s.staffSaid;
    case 'system':
      return s.systemSaid;
  }
}

function buttonsSignature(buttons: readonly QuickReply[]): string {
  return JSON.stringify(buttons.map((b) => [b.title, b.payload]));
}

export class MessageList {
  private readonly nodes = new Map<string, HTMLElement>();
  private readonly timeFormat: Intl.DateTimeFormat;
  private readonly dateTimeFormat: Intl.DateTimeFormat;

  constructor(
    private readonly root: HTMLElement,
    private readonly s: Strings,
    lang: Lang,
    private readonly onChoose: (button: QuickReply) => void,
  ) {
    this.timeFormat = new Intl.DateTimeFormat(lang, { hour: 'numeric', minute: '2-digit' });
    this.dateTimeFormat = new Intl.DateTimeFormat(lang, {
      month: 'short',
      day: 'numeric',
      hour: 'numeric',
      minute: '2-digit',
    });
  }

  /** Keyed update: existing nodes are reused and only changed parts are touched, so the
   *  live region announces new messages once instead of re-reading the whole log. */
  render(items: readonly ViewItem[], scrollToEnd: boolean): void {
    const root = this.root;
    const wasNearEnd = root.scrollHeight - root.scrollTop - root.clientHeight < NEAR_END_PX;

    const wanted = new Set(items.map((i) => i.key));
    for (const [key, node] of this.nodes) {
      if (!wanted.has(key)) {
        node.remove();
        this.nodes.delete(key);
      }
    }

    let cursor: ChildNode | null = root.firstChild;
    for (const item of items) {
      let node = this.nodes.get(item.key);
      if (!node) {
        node = this.create();
        this.nodes.set(item.key, node);
      }
      this.update(node, item);
      if (node === cursor) cursor = cursor.nextSibling;
      else root.insertBefore(node, cursor);
    }

    if (scrollToEnd || wasNearEnd) root.scrollTop = root.scrollHeight;
  }

  private create(): HTMLElement {
    const node = el('div', 'message');
    const bubble = el('div', 'message-bubble');
    bubble.append(el('span', 'visually-hidden message-prefix'));
    const text = el('p', 'message-text');
    text.dir = 'auto';
    bubble.append(text);
    node.append(bubble);
    const meta = el('p', 'message-meta');
    meta.append(el('time', 'message-time'), el('span', 'message-status'));
    node.append(meta);
    return node;
  }

  private update(node: HTMLElement, item: ViewItem): void {
    setAttr(node, 'data-id', item.id);
    setAttr(node, 'data-client-id', item.clientId);
    setAttr(node, 'data-sender', item.sender);
    setAttr(node, 'data-status', item.status);
    setAttr(node, 'class', `message message--${item.sender} message--${item.status}`);

    setText(node.querySelector('.message-prefix')!, senderPrefix(this.s, item.sender));
    setText(node.querySelector('.message-text')!, stripBidiControls(item.text));

    const time = node.querySelector('.message-time')!;
    const date = new Date(item.createdAt);
    if (item.createdAt !== '' && !Number.isNaN(date.getTime())) {
      setAttr(time, 'datetime', date.toISOString());
      setText(time, this.formatTime(date));
    } else {
      setAttr(time, 'datetime', null);
      setText(time, '');
    }
    setText(node.querySelector('.message-status')!, item.status === 'sending' ? this.s.sending : '');

    this.updateError(node, item.status === 'failed' ? item.error : null);
    this.updateButtons(node, item.buttons);
  }

  private updateError(node: HTMLElement, error: string | null): void {
    let errorEl = node.querySelector<HTMLElement>('.message-error');
    if (error === null) {
      errorEl?.remove();
      return;
    }
    if (!errorEl) {
      errorEl = el('p', 'message-error');
      node.append(errorEl);
    }
    setText(errorEl, `${this.s.notSent}: ${error}`);
  }

  private updateButtons(node: HTMLElement, buttons: readonly QuickReply[]): void {
    let group = node.querySelector<HTMLElement>('.message-buttons');
    const signature = buttonsSignature(buttons);
    if (buttons.length === 0) {
      group?.remove();
      return;
    }
    if (group && group.dataset.signature === signature) return;
    if (!group) {
      group = el('div', 'message-buttons');
      group.setAttribute('role', 'group');
      group.setAttribute('aria-label', this.s.quickReplies);
      node.querySelector('.message-bubble')!.after(group);
    }
    group.dataset.signature = signature;
    group.replaceChildren(
      ...buttons.map((b) => {
        const button = el('button', 'quick-reply');
        button.type = 'button';
        button.dir = 'auto';
        button.textContent = stripBidiControls(b.title);
        button.addEventListener('click', () => this.onChoose(b));
        return button;
      }),
    );
  }

  private formatTime(date: Date): string {
    const now = new Date();
    const sameDay =
      date.getFullYear() === now.getFullYear() &&
      date.getMonth() === now.getMonth() &&
      date.getDate() === now.getDate();
    return (sameDay ? this.timeFormat : this.dateTimeFormat).format(date);
  }
}
