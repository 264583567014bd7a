import type { Lang, Strings } from './i18n';
import type { QuickReply, Sender } from './protocol';
import { linkify, stripBidiControls } from './text';
import type { ViewItem } from './view';

// Renders ViewItems into the `role="log"` list. Message data only ever reaches the DOM
// through text nodes and attribute setters: no innerHTML, no images. The only links are
// http(s) addresses in text from the clinic's side (bot, staff, system); patient text and
// drafts are always plain text.

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

/** Opened in a new tab, without giving the target a handle on this page or the address of it. */
const LINK_REL = 'noopener noreferrer nofollow';

function buttonsSignature(buttons: readonly QuickReply[]): string {
  return JSON.stringify(buttons.map((b) => [b.title, b.payload]));
}

export class MessageList {
  private readonly nodes = new Map<string, HTMLElement>();
  /** What each .message-text currently shows, so unchanged text is not rebuilt (or re-announced). */
  private readonly shownText = new WeakMap<Element, string>();
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
    const draft = item.status === 'draft';
    setAttr(node, 'data-id', item.id);
    setAttr(node, 'data-client-id', item.clientId);
    setAttr(node, 'data-reply-to', item.replyTo);
    // A draft is not a stored message: selectors for messages by sender don't match it.
    setAttr(node, 'data-sender', draft ? null : item.sender);
    setAttr(node, 'data-status', item.status);
    setAttr(node, 'class', `message message--${item.sender} message--${item.status}`);
    // The log announces additions; a draft grows piece by piece and is replaced by the stored
    // reply (a new node, announced once), so it is kept out of the announcements.
    setAttr(node, 'aria-live', draft ? 'off' : null);
    setAttr(node, 'aria-busy', draft ? 'true' : null);

    const prefix = draft ? this.s.assistantWriting : senderPrefix(this.s, item.sender);
    setText(node.querySelector('.message-prefix')!, prefix);
    this.updateText(node.querySelector('.message-text')!, item.text, item.sender !== 'patient' && !draft);

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

  /** Plain text, or (for the clinic's side) text with its http(s) addresses as links. */
  private updateText(textEl: Element, raw: string, withLinks: boolean): void {
    const text = stripBidiControls(raw);
    const shown = `${withLinks ? 'L' : 'T'}:${text}`;
    if (this.shownText.get(textEl) === shown) return;
    this.shownText.set(textEl, shown);
    if (!withLinks) {
      textEl.textContent = text;
      return;
    }
    textEl.replaceChildren(
      ...linkify(text).map((part) => {
        if (part.kind === 'text') return document.createTextNode(part.text);
        const a = el('a', 'message-link');
        a.setAttribute('href', part.href);
        a.setAttribute('target', '_blank');
        a.setAttribute('rel', LINK_REL);
        a.textContent = part.text;
        return a;
      }),
    );
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
