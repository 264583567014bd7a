// The Conversations section: every conversation, newest activity first (no message text in the
// list), and the transcript of the one selected. Opening a transcript is a recorded read.

import { format } from '../i18n';
import type { ConversationSummary, TranscriptMessage } from './api';
import { button, clean, dateTimeFormat, el, setAttr, setDisabled, setHidden, setText, setTime } from './dom';
import { channelLabel, languageLabel, senderLabel, type ConversationsState } from './state';
import type { ConsoleStrings } from './strings';

export interface ConversationActions {
  openConversation(id: string): void;
  moreConversations(): void;
}

export class ConversationsSection {
  readonly element: HTMLElement;
  private readonly status: HTMLParagraphElement;
  private readonly list: HTMLUListElement;
  private readonly more: HTMLButtonElement;
  private readonly detailEmpty: HTMLParagraphElement;
  private readonly detailTitle: HTMLHeadingElement;
  private readonly detailSkipped: HTMLParagraphElement;
  private readonly log: HTMLDivElement;
  private shownList: readonly ConversationSummary[] | null = null;
  private shownTranscript: unknown = undefined;

  constructor(
    private readonly s: ConsoleStrings,
    private readonly actions: ConversationActions,
  ) {
    this.element = el('section', { id: 'section-conversations', className: 'console-main' });
    this.element.setAttribute('aria-labelledby', 'conversation-list-heading');
    const listPane = el('div', { className: 'list-pane' });
    const heading = el('h2', { id: 'conversation-list-heading', className: 'visually-hidden', text: s.conversationsLabel });
    this.status = el('p', { id: 'conversation-list-status', className: 'list-status' });
    this.status.setAttribute('role', 'status');
    this.list = el('ul', { id: 'conversation-list', className: 'case-list' });
    this.list.setAttribute('aria-labelledby', 'conversation-list-heading');
    this.more = button('conversations-more', s.loadMore, 'button button--quiet');
    this.more.addEventListener('click', () => this.actions.moreConversations());
    listPane.append(heading, this.status, this.list, this.more);

    const detail = el('div', { id: 'conversation-detail', className: 'detail-pane' });
    this.detailEmpty = el('p', { className: 'muted detail-empty', text: s.selectConversation });
    this.detailTitle = el('h2', { id: 'conversation-title', className: 'case-title' });
    this.detailTitle.tabIndex = -1;
    this.detailSkipped = el('p', { className: 'warning-text' });
    this.log = el('div', { id: 'conversation-transcript', className: 'transcript' });
    this.log.setAttribute('role', 'log');
    this.log.setAttribute('aria-label', s.transcriptLabel);
    this.log.tabIndex = 0;
    this.log.dataset.empty = s.transcriptEmpty;
    detail.append(this.detailEmpty, this.detailTitle, this.detailSkipped, this.log);
    this.element.append(listPane, detail);
  }

  render(c: Readonly<ConversationsState>): void {
    const s = this.s;
    const status: string[] = [];
    if (c.items === null) status.push(s.conversationsLoading);
    else if (c.items.length === 0) status.push(s.conversationsEmpty);
    if (c.skipped > 0) status.push(format(s.skippedConversations, { n: c.skipped }));
    setText(this.status, status.join(' '));
    setHidden(this.more, c.nextBefore === null);
    setDisabled(this.more, c.loading);

    if (c.items !== this.shownList) {
      this.shownList = c.items;
      this.list.replaceChildren(...(c.items ?? []).map((item) => this.row(item)));
    }
    for (const b of this.list.querySelectorAll<HTMLButtonElement>('button[data-conversation-id]')) {
      setAttr(b, 'aria-current', b.dataset.conversationId === c.selectedId ? 'true' : null);
    }

    setHidden(this.detailEmpty, c.selectedId !== null);
    setHidden(this.detailTitle, c.selectedId === null);
    setText(this.detailTitle, c.selectedId !== null ? format(s.transcriptFor, { id: c.selectedId.slice(0, 8) }) : '');
    setAttr(this.log, 'data-conversation-id', c.selectedId);
    setAttr(this.log, 'data-loaded', c.transcript !== null ? 'true' : null);
    const skipped = c.transcript?.skippedMessages ?? 0;
    setText(this.detailSkipped, skipped > 0 ? format(s.skippedMessages, { n: skipped }) : '');
    setHidden(this.detailSkipped, skipped === 0);
    const transcript = c.selectedId === null ? null : c.transcript;
    if (transcript !== this.shownTranscript) {
      this.shownTranscript = transcript;
      if (transcript === null && c.selectedId !== null) {
        this.log.replaceChildren(el('p', { className: 'muted', text: s.loadingTranscript }));
      } else {
        this.log.replaceChildren(...(transcript?.messages ?? []).map((m) => this.message(m)));
      }
    }
  }

  focusTranscript(): void {
    this.detailTitle.focus();
  }

  /** Signed out: nothing of any patient stays in the page. */
  clear(): void {
    this.shownList = null;
    this.shownTranscript = undefined;
    this.list.replaceChildren();
    this.log.replaceChildren();
    setText(this.detailTitle, '');
  }

  private row(c: ConversationSummary): HTMLLIElement {
    const s = this.s;
    const row = el('li', { className: 'case-row' });
    row.dataset.testid = 'conversation-row';
    const b = el('button', { className: 'case-row-button' });
    b.type = 'button';
    b.dataset.conversationId = c.id;
    b.addEventListener('click', () => this.actions.openConversation(c.id));
    const line1 = el('span', { className: 'case-row-line' });
    line1.append(
      el('span', {
        className: 'case-reason',
        text: format(s.conversationRow, {
          channel: channelLabel(s, c.channel),
          language: languageLabel(c.language),
          count: c.message_count,
        }),
      }),
    );
    if (c.safety_level !== 'none') {
      line1.append(el('span', { className: 'badge badge--overdue', text: format(s.conversationSafety, { level: clean(c.safety_level) }) }));
    }
    const line2 = el('span', { className: 'case-row-line case-row-meta' });
    const when = new Date(c.last_message_at);
    line2.append(el('span', { text: format(s.lastActivity, { time: dateTimeFormat.format(when) }) }));
    b.append(line1, line2);
    row.append(b);
    return row;
  }

  private message(m: TranscriptMessage): HTMLElement {
    const node = el('article', { className: `tmsg tmsg--${m.sender}` });
    node.dataset.messageId = m.id;
    node.dataset.sender = m.sender;
    node.dataset.direction = m.direction;
    const head = el('p', { className: 'tmsg-head' });
    const time = el('time', { className: 'tmsg-time' });
    setTime(time, m.created_at, '');
    head.append(
      el('span', { className: 'tmsg-sender', text: senderLabel(this.s, m.sender) }),
      time,
      el('span', { className: 'tmsg-status', text: `${channelLabel(this.s, m.channel)} · ${clean(m.status)}` }),
    );
    const text = el('p', { className: 'tmsg-text prewrap', text: clean(m.text) });
    text.dir = 'auto';
    node.append(head, text);
    return node;
  }
}
