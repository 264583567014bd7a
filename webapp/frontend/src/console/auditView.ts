// The Audit log section (admins and auditors): the latest events and a check that the hash
// chain is unbroken. A server without the audit API says so instead of showing an error.

import { format } from '../i18n';
import type { AuditEntry } from './api';
import { button, clean, el, setAttr, setDisabled, setHidden, setText, setTime } from './dom';
import type { AuditState } from './state';
import type { ConsoleStrings } from './strings';

export interface AuditActions {
  verifyAudit(): void;
  reloadTab(): void;
}

export class AuditSection {
  readonly element: HTMLElement;
  private readonly status: HTMLParagraphElement;
  private readonly verdict: HTMLParagraphElement;
  private readonly verify: HTMLButtonElement;
  private readonly table: HTMLTableElement;
  private readonly body: HTMLTableSectionElement;
  private shown: unknown = undefined;

  constructor(
    private readonly s: ConsoleStrings,
    private readonly actions: AuditActions,
  ) {
    this.element = el('section', { id: 'section-audit', className: 'section' });
    this.element.setAttribute('aria-labelledby', 'audit-heading');
    const heading = el('h2', { id: 'audit-heading', text: s.auditHeading });
    const toolbar = el('div', { className: 'list-toolbar' });
    this.verify = button('audit-verify', s.auditVerify, 'button');
    this.verify.addEventListener('click', () => this.actions.verifyAudit());
    const refresh = button('audit-refresh', s.refresh, 'button button--quiet');
    refresh.addEventListener('click', () => this.actions.reloadTab());
    toolbar.append(this.verify, refresh);
    this.verdict = el('p', { id: 'audit-verdict', className: 'list-status' });
    this.verdict.setAttribute('role', 'status');
    this.status = el('p', { id: 'audit-status', className: 'list-status' });
    this.table = el('table', { id: 'audit-events', className: 'data-table' });
    const head = el('thead');
    const headRow = el('tr');
    for (const text of [s.auditColAt, s.auditColActor, s.auditColAction, s.auditColConversation, s.auditColDetail]) {
      const th = el('th', { text });
      th.scope = 'col';
      headRow.append(th);
    }
    head.append(headRow);
    this.body = el('tbody');
    this.table.append(head, this.body);
    this.element.append(heading, toolbar, this.verdict, this.status, this.table);
  }

  render(a: Readonly<AuditState>): void {
    const s = this.s;
    setDisabled(this.verify, a.verifying || a.unavailable);
    setText(this.verify, a.verifying ? s.auditVerifying : s.auditVerify);
    const v = a.verdict;
    setText(
      this.verdict,
      v === null
        ? ''
        : v.ok
          ? format(s.auditVerifyOk, { n: v.checked })
          : format(s.auditVerifyBad, { id: v.firstBadId ?? s.none, n: v.checked }),
    );
    setAttr(this.verdict, 'data-ok', v === null ? null : String(v.ok));
    const status: string[] = [];
    if (a.unavailable) status.push(s.auditUnavailable);
    else if (a.page === null) status.push(a.loading ? s.auditLoading : '');
    else if (a.page.events.length === 0) status.push(s.auditEmpty);
    if (a.page && a.page.skipped > 0) status.push(format(s.skippedEvents, { n: a.page.skipped }));
    setText(this.status, status.join(' ').trim());
    setHidden(this.table, a.unavailable);
    const events = a.page?.events ?? null;
    if (events !== this.shown) {
      this.shown = events;
      this.body.replaceChildren(...(events ?? []).map((e) => this.row(e)));
    }
  }

  clear(): void {
    this.shown = undefined;
    this.body.replaceChildren();
    setText(this.verdict, '');
  }

  private row(e: AuditEntry): HTMLTableRowElement {
    const row = el('tr');
    row.dataset.eventId = e.id;
    const time = el('time');
    setTime(time, e.at, this.s.none);
    const when = el('td');
    when.append(time);
    const detail = el('td', { className: 'mono', text: clean(e.detail) });
    row.append(
      when,
      el('td', { text: clean(e.actor) }),
      el('td', { text: clean(e.action) }),
      el('td', { className: 'mono', text: e.conversation_id ?? '' }),
      detail,
    );
    return row;
  }
}
