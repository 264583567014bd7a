// The staff console's DOM, built into the (empty) root element of console.html. Case data and
// messages only reach the page through textContent and attribute setters: no innerHTML, no
// links, no images. render() is idempotent and only touches what changed, so the 5-second
// refresh neither re-announces the transcript nor disturbs typing or focus.

import { format } from '../i18n';
import type { Case, CaseFilter, CaseMessage } from './api';
import { AuditSection } from './auditView';
import type { ConsoleViewPort, FocusTarget } from './controller';
import { ConversationsSection } from './conversationsView';
import { DashboardSection, noCharts, type ChartFactory } from './dashboardView';
import { button, clean, clockFormat, dateTimeFormat, el, setAttr, setDisabled, setHidden, setText, setTime } from './dom';
import { KbSection } from './kbView';
import {
  MAX_PASSWORD,
  MAX_USERNAME,
  canSend,
  canUpload,
  canWorkCases,
  channelLabel,
  isMine,
  languageLabel,
  ownerText,
  permissions,
  priorityLabel,
  reasonLabel,
  replyHint,
  roleLabel,
  selectedCase,
  senderLabel,
  statusLabel,
  tabLabel,
  tabsFor,
  visibleCases,
  waitingText,
  TABS,
  type ConsoleState,
  type Tab,
} from './state';
import type { ConsoleStrings } from './strings';

export interface ConsoleActions {
  signIn(username: string, password: string): void;
  signOut(): void;
  showTab(tab: Tab): void;
  reloadTab(): void;
  openConversation(id: string): void;
  moreConversations(): void;
  upload(file: Blob | null, filename: string, language: string | null): void;
  verifyAudit(): void;
  setFilter(filter: CaseFilter): void;
  refresh(): void;
  select(id: string): void;
  claim(): void;
  handback(): void;
  resolve(): void;
  replyInput(text: string): void;
  sendReply(): void;
  dismissNotice(): void;
  dismissError(): void;
}

/** Longest reply the box takes (the case API refuses longer ones). */
export const MAX_REPLY_LENGTH = 4000;
const NEAR_END_PX = 80;

interface RowParts {
  row: HTMLLIElement;
  button: HTMLButtonElement;
  priority: HTMLSpanElement;
  reason: HTMLSpanElement;
  overdue: HTMLSpanElement;
  channel: HTMLSpanElement;
  waiting: HTMLSpanElement;
  owner: HTMLSpanElement;
}

interface MetaField {
  dt: HTMLElement;
  dd: HTMLElement;
}

export class ConsoleView implements ConsoleViewPort {
  // chrome
  private readonly header: HTMLElement;
  private readonly signedInAs: HTMLParagraphElement;
  private readonly signOutButton: HTMLButtonElement;
  private readonly error: HTMLParagraphElement;
  private readonly errorDismiss: HTMLButtonElement;
  private readonly notice: HTMLParagraphElement;
  private readonly noticeBar: HTMLDivElement;
  private readonly noticeDismiss: HTMLButtonElement;
  // sign-in
  private readonly signInSection: HTMLElement;
  private readonly signInForm: HTMLFormElement;
  private readonly usernameInput: HTMLInputElement;
  private readonly passwordInput: HTMLInputElement;
  // sections
  private readonly nav: HTMLElement;
  private readonly tabButtons = new Map<Tab, HTMLButtonElement>();
  private readonly casesSection: HTMLElement;
  private readonly readOnlyNote: HTMLParagraphElement;
  private readonly actionsGroup: HTMLDivElement;
  private readonly conversations: ConversationsSection;
  private readonly kb: KbSection;
  private readonly dashboard: DashboardSection;
  private readonly audit: AuditSection;
  private readonly signInButton: HTMLButtonElement;
  // console
  private readonly main: HTMLDivElement;
  private readonly filterSelect: HTMLSelectElement;
  private readonly refreshButton: HTMLButtonElement;
  private readonly updatedAt: HTMLParagraphElement;
  private readonly listStatus: HTMLParagraphElement;
  private readonly list: HTMLUListElement;
  private readonly rows = new Map<string, RowParts>();
  // detail
  private readonly detailSection: HTMLElement;
  private readonly detailEmpty: HTMLParagraphElement;
  private readonly detailBody: HTMLDivElement;
  private readonly caseTitle: HTMLHeadingElement;
  private readonly badgePriority: HTMLSpanElement;
  private readonly badgeStatus: HTMLSpanElement;
  private readonly badgeOverdue: HTMLSpanElement;
  private readonly waiting: HTMLSpanElement;
  private readonly meta: Record<'status' | 'channel' | 'language' | 'opened' | 'due' | 'claimed' | 'rules', MetaField>;
  private readonly openedTime: HTMLTimeElement;
  private readonly dueTime: HTMLTimeElement;
  private readonly claimButton: HTMLButtonElement;
  private readonly handbackButton: HTMLButtonElement;
  private readonly resolveButton: HTMLButtonElement;
  private readonly summaryClinician: HTMLParagraphElement;
  private readonly triageDisposition: HTMLElement;
  private readonly triageReasons: HTMLUListElement;
  private readonly triageBlock: HTMLDivElement;
  private readonly noTriage: HTMLParagraphElement;
  private readonly summaryPatient: HTMLParagraphElement;
  private readonly transcriptSection: HTMLElement;
  private readonly transcriptSkipped: HTMLParagraphElement;
  private readonly transcriptLoading: HTMLParagraphElement;
  private transcript: HTMLDivElement;
  private transcriptCaseId: string | null = null;
  private readonly messageNodes = new Map<string, HTMLElement>();
  private readonly replyForm: HTMLFormElement;
  private readonly replyText: HTMLTextAreaElement;
  private readonly replyHintEl: HTMLParagraphElement;
  private readonly replySend: HTMLButtonElement;

  private lastPhase: ConsoleState['phase'] | null = null;

  constructor(
    private readonly root: HTMLElement,
    private readonly s: ConsoleStrings,
    private readonly actions: ConsoleActions,
    charts: ChartFactory = noCharts,
  ) {
    root.classList.add('console');

    // ---- header, error and notice (shared by both phases) ----
    this.header = el('header', { className: 'console-header' });
    const title = el('h1', { className: 'console-title', text: s.heading });
    this.signedInAs = el('p', { id: 'signed-in-as', className: 'signed-in-as' });
    this.signOutButton = button('sign-out', s.signOut, 'button button--quiet');
    this.signOutButton.addEventListener('click', () => this.actions.signOut());
    const who = el('div', { className: 'console-who' });
    who.append(this.signedInAs, this.signOutButton);
    this.header.append(title, who);

    const errorBar = el('div', { className: 'message-bar message-bar--error' });
    this.error = el('p', { id: 'error', className: 'message-bar-text' });
    this.error.setAttribute('role', 'alert');
    this.errorDismiss = button('error-dismiss', s.dismiss, 'button button--quiet');
    this.errorDismiss.addEventListener('click', () => this.actions.dismissError());
    errorBar.append(this.error, this.errorDismiss);

    this.noticeBar = el('div', { className: 'message-bar message-bar--notice' });
    this.notice = el('p', { id: 'notice', className: 'message-bar-text' });
    this.notice.setAttribute('role', 'status');
    this.notice.setAttribute('aria-live', 'polite');
    this.noticeDismiss = button('notice-dismiss', s.dismiss, 'button button--quiet');
    this.noticeDismiss.addEventListener('click', () => this.actions.dismissNotice());
    this.noticeBar.append(this.notice, this.noticeDismiss);

    // ---- sign-in ----
    this.signInSection = el('section', { id: 'signin', className: 'signin' });
    this.signInSection.setAttribute('aria-labelledby', 'signin-heading');
    const signInHeading = el('h2', { id: 'signin-heading', text: s.signInHeading });
    const intro = el('p', { className: 'muted', text: s.signInIntro });
    this.signInForm = el('form', { id: 'signin-form', className: 'signin-form' });
    this.signInForm.noValidate = true;
    const usernameLabel = el('label', { text: s.usernameLabel });
    usernameLabel.htmlFor = 'username';
    this.usernameInput = el('input', { id: 'username', className: 'input' });
    this.usernameInput.type = 'text';
    this.usernameInput.name = 'username';
    this.usernameInput.autocomplete = 'username';
    this.usernameInput.spellcheck = false;
    this.usernameInput.autocapitalize = 'none';
    this.usernameInput.maxLength = MAX_USERNAME;
    this.usernameInput.required = true;
    const passwordLabel = el('label', { text: s.passwordLabel });
    passwordLabel.htmlFor = 'password';
    this.passwordInput = el('input', { id: 'password', className: 'input' });
    this.passwordInput.type = 'password';
    this.passwordInput.name = 'password';
    this.passwordInput.autocomplete = 'current-password';
    this.passwordInput.maxLength = MAX_PASSWORD;
    this.passwordInput.required = true;
    this.signInButton = el('button', { id: 'signin-submit', className: 'button button--primary', text: s.signIn });
    this.signInButton.type = 'submit';
    this.signInForm.append(usernameLabel, this.usernameInput, passwordLabel, this.passwordInput, this.signInButton);
    this.signInForm.addEventListener('submit', (event) => {
      event.preventDefault();
      const password = this.passwordInput.value;
      // The password leaves the page with this request and is not kept in it.
      this.passwordInput.value = '';
      this.actions.signIn(this.usernameInput.value, password);
    });
    this.signInSection.append(signInHeading, intro, this.signInForm);

    // ---- case list ----
    this.nav = el('nav', { id: 'console-tabs', className: 'console-tabs' });
    this.nav.setAttribute('aria-label', s.sectionsLabel);
    for (const tab of TABS) {
      const b = button(`tab-${tab}`, tabLabel(s, tab), 'console-tab');
      b.dataset.tab = tab;
      b.addEventListener('click', () => this.actions.showTab(tab));
      this.tabButtons.set(tab, b);
      this.nav.append(b);
    }
    this.main = el('div', { id: 'console-main', className: 'console-main' });
    this.casesSection = el('section', { id: 'section-cases', className: 'section' });
    this.casesSection.setAttribute('aria-label', s.tabCases);
    this.readOnlyNote = el('p', { id: 'read-only', className: 'hint', text: s.readOnly });
    const listPane = el('section', { className: 'list-pane' });
    listPane.setAttribute('aria-labelledby', 'case-list-heading');
    const listHeading = el('h2', { id: 'case-list-heading', className: 'visually-hidden', text: s.listLabel });
    const toolbar = el('div', { className: 'list-toolbar' });
    const filterLabel = el('label', { text: s.filterLabel });
    filterLabel.htmlFor = 'case-filter';
    this.filterSelect = el('select', { id: 'case-filter', className: 'input' });
    for (const [value, text] of [
      ['active', s.filterActive],
      ['all', s.filterAll],
    ] as const) {
      const option = el('option', { text });
      option.value = value;
      this.filterSelect.append(option);
    }
    this.filterSelect.addEventListener('change', () => {
      this.actions.setFilter(this.filterSelect.value === 'all' ? 'all' : 'active');
    });
    this.refreshButton = button('refresh', s.refresh, 'button button--quiet');
    this.refreshButton.addEventListener('click', () => this.actions.refresh());
    toolbar.append(filterLabel, this.filterSelect, this.refreshButton);
    this.updatedAt = el('p', { id: 'updated-at', className: 'hint' });
    this.listStatus = el('p', { id: 'case-list-status', className: 'list-status' });
    this.listStatus.setAttribute('role', 'status');
    this.list = el('ul', { id: 'case-list', className: 'case-list' });
    this.list.setAttribute('aria-labelledby', 'case-list-heading');
    listPane.append(listHeading, toolbar, this.updatedAt, this.listStatus, this.list);

    // ---- case detail ----
    this.detailSection = el('section', { id: 'case-detail', className: 'detail-pane' });
    this.detailSection.setAttribute('aria-label', s.detailLabel);
    this.detailEmpty = el('p', { id: 'case-detail-empty', className: 'muted detail-empty', text: s.noSelection });
    this.detailBody = el('div', { id: 'case-body', className: 'detail-body' });

    this.caseTitle = el('h2', { id: 'case-title', className: 'case-title' });
    this.caseTitle.tabIndex = -1;
    const badges = el('p', { className: 'badges' });
    this.badgePriority = el('span', { id: 'case-priority', className: 'badge' });
    this.badgeStatus = el('span', { id: 'case-status', className: 'badge badge--status' });
    this.badgeOverdue = el('span', { id: 'case-overdue', className: 'badge badge--overdue', text: s.overdue });
    this.waiting = el('span', { id: 'case-waiting', className: 'case-waiting' });
    badges.append(this.badgePriority, this.badgeStatus, this.badgeOverdue, this.waiting);

    const actionsGroup = el('div', { className: 'case-actions' });
    this.actionsGroup = actionsGroup;
    actionsGroup.setAttribute('role', 'group');
    actionsGroup.setAttribute('aria-label', s.actionsLabel);
    this.claimButton = button('claim', s.claim, 'button button--primary');
    this.handbackButton = button('handback', s.handback);
    this.resolveButton = button('resolve', s.resolve);
    this.claimButton.addEventListener('click', () => this.actions.claim());
    this.handbackButton.addEventListener('click', () => this.actions.handback());
    this.resolveButton.addEventListener('click', () => this.actions.resolve());
    actionsGroup.append(this.claimButton, this.handbackButton, this.resolveButton);

    const metaList = el('dl', { id: 'case-meta', className: 'case-meta' });
    const field = (label: string): MetaField => {
      const wrap = el('div', { className: 'case-meta-item' });
      const dt = el('dt', { text: label });
      const dd = el('dd');
      wrap.append(dt, dd);
      metaList.append(wrap);
      return { dt, dd };
    };
    this.meta = {
      status: field(s.fieldStatus),
      channel: field(s.fieldChannel),
      language: field(s.fieldLanguage),
      opened: field(s.fieldOpened),
      due: field(s.fieldDue),
      claimed: field(s.fieldClaimed),
      rules: field(s.fieldRules),
    };
    this.openedTime = el('time');
    this.meta.opened.dd.append(this.openedTime);
    this.dueTime = el('time');
    this.meta.due.dd.append(this.dueTime);

    const summarySection = el('section', { className: 'detail-block' });
    summarySection.setAttribute('aria-labelledby', 'summary-clinician-heading');
    this.summaryClinician = el('p', { id: 'summary-clinician', className: 'prewrap' });
    this.summaryClinician.dir = 'auto';
    summarySection.append(
      el('h3', { id: 'summary-clinician-heading', text: s.clinicianSummary }),
      this.summaryClinician,
    );

    const triageSection = el('section', { id: 'triage', className: 'detail-block' });
    triageSection.setAttribute('aria-labelledby', 'triage-heading');
    this.triageBlock = el('div');
    const dispositionLine = el('p');
    this.triageDisposition = el('strong', { id: 'triage-disposition' });
    dispositionLine.append(el('span', { text: `${s.triageDisposition}: ` }), this.triageDisposition);
    this.triageReasons = el('ul', { id: 'triage-reasons', className: 'triage-reasons' });
    this.triageReasons.setAttribute('aria-label', s.triageReasons);
    this.triageBlock.append(dispositionLine, this.triageReasons);
    this.noTriage = el('p', { className: 'muted', text: s.noTriage });
    triageSection.append(el('h3', { id: 'triage-heading', text: s.triageHeading }), this.triageBlock, this.noTriage);

    const patientSummary = el('details', { className: 'detail-block' });
    this.summaryPatient = el('p', { id: 'summary-patient', className: 'prewrap' });
    this.summaryPatient.dir = 'auto';
    patientSummary.append(el('summary', { text: s.patientSummary }), this.summaryPatient);

    this.transcriptSection = el('section', { className: 'detail-block transcript-block' });
    this.transcriptSection.setAttribute('aria-labelledby', 'transcript-heading');
    this.transcriptSkipped = el('p', { id: 'transcript-skipped', className: 'warning-text' });
    this.transcriptLoading = el('p', { className: 'muted', text: s.loadingCase });
    this.transcript = this.newTranscript();
    this.transcriptSection.append(
      el('h3', { id: 'transcript-heading', text: s.transcriptHeading }),
      this.transcriptSkipped,
      this.transcriptLoading,
      this.transcript,
    );

    this.replyForm = el('form', { id: 'reply-form', className: 'reply' });
    this.replyForm.noValidate = true;
    const replyLabel = el('label', { className: 'reply-label', text: s.replyLabel });
    replyLabel.htmlFor = 'reply-text';
    this.replyText = el('textarea', { id: 'reply-text', className: 'input reply-text' });
    this.replyText.name = 'text';
    this.replyText.rows = 3;
    this.replyText.maxLength = MAX_REPLY_LENGTH;
    this.replyText.setAttribute('aria-describedby', 'reply-hint');
    this.replyText.setAttribute('enterkeyhint', 'send');
    this.replySend = el('button', { id: 'reply-send', className: 'button button--primary', text: s.send });
    this.replySend.type = 'submit';
    this.replyHintEl = el('p', { id: 'reply-hint', className: 'hint' });
    const replyRow = el('div', { className: 'reply-row' });
    replyRow.append(this.replyText, this.replySend);
    this.replyForm.append(replyLabel, replyRow, this.replyHintEl);
    this.replyForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.actions.sendReply();
    });
    this.replyText.addEventListener('input', () => this.actions.replyInput(this.replyText.value));
    this.replyText.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        this.actions.sendReply();
      }
    });

    const top = el('div', { className: 'detail-top' });
    top.append(this.caseTitle, badges, actionsGroup);
    this.detailBody.append(top, summarySection, triageSection, metaList, patientSummary, this.transcriptSection, this.replyForm);
    this.detailSection.append(this.detailEmpty, this.detailBody);

    this.main.append(listPane, this.detailSection);
    this.casesSection.append(this.readOnlyNote, this.main);
    this.conversations = new ConversationsSection(s, actions);
    this.kb = new KbSection(s, actions);
    this.dashboard = new DashboardSection(s, charts);
    this.audit = new AuditSection(s, actions);
    root.replaceChildren(
      this.header,
      errorBar,
      this.noticeBar,
      this.signInSection,
      this.nav,
      this.casesSection,
      this.conversations.element,
      this.kb.element,
      this.dashboard.element,
      this.audit.element,
    );
  }

  render(state: Readonly<ConsoleState>): void {
    const s = this.s;
    const signedIn = state.phase === 'console';
    const phaseChanged = state.phase !== this.lastPhase;
    this.lastPhase = state.phase;
    this.root.dataset.phase = state.phase;

    const role = state.user?.role;
    const tabs = tabsFor(role);
    setHidden(this.signInSection, signedIn);
    setHidden(this.nav, !signedIn);
    for (const [tab, b] of this.tabButtons) {
      setHidden(b, !tabs.includes(tab));
      setAttr(b, 'aria-current', signedIn && tab === state.tab ? 'page' : null);
    }
    setHidden(this.casesSection, !signedIn || state.tab !== 'cases');
    setHidden(this.main, !signedIn);
    setHidden(this.conversations.element, !signedIn || state.tab !== 'conversations');
    setHidden(this.kb.element, !signedIn || state.tab !== 'kb');
    setHidden(this.dashboard.element, !signedIn || state.tab !== 'dashboard');
    setHidden(this.audit.element, !signedIn || state.tab !== 'audit');
    setHidden(this.signedInAs, !signedIn);
    setHidden(this.signOutButton, !signedIn);
    const who = state.user ? format(s.signedInRole, { name: state.staffName, role: roleLabel(s, state.user.role) }) : '';
    setText(this.signedInAs, signedIn ? format(s.signedInAs, { name: who }) : '');
    setAttr(this.root, 'data-role', role ?? null);

    setText(this.error, state.error ?? '');
    setHidden(this.errorDismiss, state.error === null);
    setText(this.notice, state.notice?.text ?? '');
    setAttr(this.noticeBar, 'data-tone', state.notice?.tone ?? null);
    setHidden(this.noticeDismiss, state.notice === null);

    if (!signedIn) {
      if (phaseChanged) {
        // Never leave a password in the page; give back the username after a refusal.
        this.passwordInput.value = '';
        this.usernameInput.value = state.nameDraft;
        // Signed out: no patient data stays in the page, not even hidden.
        this.clearCase();
        this.conversations.clear();
        this.kb.clear();
        this.dashboard.clear();
        this.audit.clear();
        this.list.replaceChildren();
        this.rows.clear();
        this.replyText.value = '';
        setText(this.updatedAt, '');
      }
      setDisabled(this.signInButton, state.signingIn);
      setText(this.signInButton, state.signingIn ? s.signingIn : s.signIn);
      setAttr(this.signInForm, 'aria-busy', state.signingIn ? 'true' : null);
      return;
    }
    if (phaseChanged) this.passwordInput.value = '';
    setHidden(this.readOnlyNote, canWorkCases(role));
    this.renderList(state);
    this.renderDetail(state);
    this.conversations.render(state.conversations);
    this.kb.render(state.kb, canUpload(role));
    this.dashboard.render(state.dashboard);
    this.audit.render(state.audit);
  }

  focus(target: FocusTarget): void {
    switch (target) {
      case 'username':
        this.usernameInput.focus();
        return;
      case 'password':
        // After a refusal the username is usually right: start with the password.
        if (this.usernameInput.value.trim() === '') this.usernameInput.focus();
        else this.passwordInput.focus();
        return;
      case 'tab':
        return;
      case 'transcript':
        this.conversations.focusTranscript();
        return;
      case 'list': {
        const first = this.list.querySelector<HTMLButtonElement>('.case-row-button');
        (first ?? this.filterSelect).focus();
        return;
      }
      case 'reply':
        if (!this.replyText.disabled) this.replyText.focus();
        return;
      case 'detail':
        // Where the detail pane sits below the list (narrow screens), take the reader to it.
        if (this.detailSection.offsetTop > this.list.offsetTop + this.list.offsetHeight) {
          this.caseTitle.focus();
        }
        return;
    }
  }

  // ---- list ------------------------------------------------------------------------------

  private renderList(state: Readonly<ConsoleState>): void {
    const s = this.s;
    if (this.filterSelect.value !== state.filter) this.filterSelect.value = state.filter;
    setText(this.updatedAt, state.updatedAt !== null ? format(s.lastUpdated, { time: clockFormat.format(state.updatedAt) }) : '');

    const cases = state.cases === null ? [] : visibleCases(state.cases, state.filter);
    const status: string[] = [];
    if (state.cases === null) status.push(s.listLoading);
    else if (cases.length === 0) status.push(state.filter === 'active' ? s.listEmptyActive : s.listEmptyAll);
    if (state.skippedCases > 0) status.push(format(s.skippedCases, { n: state.skippedCases }));
    setText(this.listStatus, status.join(' '));
    setAttr(this.listStatus, 'data-warning', state.skippedCases > 0 ? 'true' : null);

    const wanted = new Set(cases.map((c) => c.id));
    for (const [id, parts] of this.rows) {
      if (!wanted.has(id)) {
        parts.row.remove();
        this.rows.delete(id);
      }
    }
    let cursor: ChildNode | null = this.list.firstChild;
    for (const c of cases) {
      let parts = this.rows.get(c.id);
      if (!parts) {
        parts = this.createRow(c.id);
        this.rows.set(c.id, parts);
      }
      this.updateRow(parts, c, state);
      if (parts.row === cursor) cursor = cursor.nextSibling;
      else this.list.insertBefore(parts.row, cursor);
    }
  }

  private createRow(id: string): RowParts {
    const row = el('li', { className: 'case-row' });
    row.dataset.caseId = id;
    row.dataset.testid = 'case-row';
    const b = el('button', { className: 'case-row-button' });
    b.type = 'button';
    b.addEventListener('click', () => this.actions.select(id));
    const line1 = el('span', { className: 'case-row-line' });
    const priority = el('span', { className: 'badge' });
    const reason = el('span', { className: 'case-reason' });
    const overdue = el('span', { className: 'badge badge--overdue', text: this.s.overdue });
    line1.append(priority, reason, overdue);
    const line2 = el('span', { className: 'case-row-line case-row-meta' });
    const channel = el('span', { className: 'case-channel' });
    const waiting = el('span', { className: 'case-waiting' });
    const owner = el('span', { className: 'case-owner' });
    line2.append(channel, waiting, owner);
    b.append(line1, line2);
    row.append(b);
    return { row, button: b, priority, reason, overdue, channel, waiting, owner };
  }

  private updateRow(parts: RowParts, c: Case, state: Readonly<ConsoleState>): void {
    const s = this.s;
    const { row } = parts;
    setAttr(row, 'data-priority', c.priority);
    setAttr(row, 'data-status', c.status);
    setAttr(row, 'data-overdue', c.overdue ? 'true' : null);
    setAttr(row, 'data-mine', isMine(c, state.staffName) ? 'true' : null);
    setAttr(parts.button, 'aria-current', c.id === state.selectedId ? 'true' : null);
    this.setPriorityBadge(parts.priority, c);
    setText(parts.reason, reasonLabel(s, c.reason));
    setHidden(parts.overdue, !c.overdue);
    setText(parts.channel, `${channelLabel(s, c.channel)} · ${c.language.toUpperCase()}`);
    setText(parts.waiting, waitingText(s, c, state.now));
    setText(parts.owner, clean(ownerText(s, c, state.staffName)));
  }

  /** Priority as text ("Immediate"), with a hidden "Priority:" for screen readers; colour is extra. */
  private setPriorityBadge(badge: HTMLElement, c: Case): void {
    setAttr(badge, 'class', `badge badge--${c.priority}`);
    setAttr(badge, 'data-priority', c.priority);
    const text = priorityLabel(this.s, c.priority);
    if (badge.dataset.text !== text) {
      badge.dataset.text = text;
      badge.replaceChildren(el('span', { className: 'visually-hidden', text: `${this.s.priorityPrefix} ` }), text);
    }
  }

  // ---- detail ----------------------------------------------------------------------------

  private renderDetail(state: Readonly<ConsoleState>): void {
    const s = this.s;
    const c = selectedCase(state);
    setHidden(this.detailEmpty, c !== null);
    setHidden(this.detailBody, c === null);
    if (state.selectedId !== null && c === null) setText(this.detailEmpty, s.loadingCase);
    else setText(this.detailEmpty, s.noSelection);
    if (c === null) {
      this.clearCase();
      return;
    }
    setAttr(this.detailSection, 'data-shown-case', c.id);
    setAttr(this.detailSection, 'data-status', c.status);

    setText(this.caseTitle, format(s.caseHeading, { priority: priorityLabel(s, c.priority), reason: reasonLabel(s, c.reason) }));
    this.setPriorityBadge(this.badgePriority, c);
    setText(this.badgeStatus, statusLabel(s, c.status));
    setAttr(this.badgeStatus, 'data-status', c.status);
    setHidden(this.badgeOverdue, !c.overdue);
    setText(this.waiting, waitingText(s, c, state.now));

    setText(this.meta.status.dd, statusLabel(s, c.status));
    setText(this.meta.channel.dd, channelLabel(s, c.channel));
    setText(this.meta.language.dd, languageLabel(c.language));
    setTime(this.openedTime, c.created_at, s.none);
    setTime(this.dueTime, c.due_at, s.none);
    setText(
      this.meta.claimed.dd,
      c.claimed_by !== null
        ? clean(
            c.claimed_at !== null
              ? format(s.fieldClaimedValue, { name: c.claimed_by, time: dateTimeFormat.format(new Date(c.claimed_at)) })
              : c.claimed_by,
          )
        : s.none,
    );
    setText(this.meta.rules.dd, c.rule_ids.length > 0 ? clean(c.rule_ids.join(', ')) : s.none);

    setText(this.summaryClinician, c.summary_clinician.trim() !== '' ? clean(c.summary_clinician) : s.emptySummary);
    setText(this.summaryPatient, c.summary_patient.trim() !== '' ? clean(c.summary_patient) : s.emptySummary);
    setHidden(this.triageBlock, c.triage === null);
    setHidden(this.noTriage, c.triage !== null);
    if (c.triage !== null) {
      setText(this.triageDisposition, c.triage.disposition !== '' ? clean(c.triage.disposition) : s.none);
      const reasons = c.triage.reasons.map(clean);
      if (this.triageReasons.dataset.signature !== JSON.stringify(reasons)) {
        this.triageReasons.dataset.signature = JSON.stringify(reasons);
        this.triageReasons.replaceChildren(...reasons.map((r) => el('li', { text: r })));
      }
    }

    const role = state.user?.role;
    const perms = permissions(c, state.staffName, state.busy, role);
    // Auditors read cases: no buttons that would only be refused.
    const works = canWorkCases(role);
    setHidden(this.actionsGroup, !works);
    setHidden(this.replyForm, !works);
    setDisabled(this.claimButton, !perms.claim);
    setDisabled(this.handbackButton, !perms.handback);
    setDisabled(this.resolveButton, !perms.resolve);
    setText(this.claimButton, state.busy === 'claim' ? s.working : s.claim);
    setText(this.handbackButton, state.busy === 'handback' ? s.working : s.handback);
    setText(this.resolveButton, state.busy === 'resolve' ? s.working : s.resolve);

    const detail = state.detail && state.detail.case.id === c.id ? state.detail : null;
    this.renderTranscript(c.id, detail?.messages ?? null);
    setHidden(this.transcriptLoading, detail !== null);
    const skipped = detail?.skippedMessages ?? 0;
    setText(this.transcriptSkipped, skipped > 0 ? format(s.skippedMessages, { n: skipped }) : '');
    setHidden(this.transcriptSkipped, skipped === 0);

    const mine = isMine(c, state.staffName);
    const sending = state.busy === 'reply';
    // Usable only by the staff member who claimed the case, and not while a request runs.
    setDisabled(this.replyText, !mine || state.busy !== null);
    if (this.replyText.value !== state.replyDraft) this.replyText.value = state.replyDraft;
    setDisabled(this.replySend, !canSend(state));
    setText(this.replySend, sending ? s.sending : s.send);
    setAttr(this.replyForm, 'aria-busy', sending ? 'true' : null);
    setText(this.replyHintEl, replyHint(s, c, state.staffName));
  }

  /** Nothing selected (or signed out): drop every trace of the last case from the page. */
  private clearCase(): void {
    setAttr(this.detailSection, 'data-shown-case', null);
    setAttr(this.detailSection, 'data-status', null);
    for (const node of [this.caseTitle, this.waiting, this.summaryClinician, this.summaryPatient, this.triageDisposition]) {
      setText(node, '');
    }
    for (const key of ['status', 'channel', 'language', 'claimed', 'rules'] as const) setText(this.meta[key].dd, '');
    setText(this.openedTime, '');
    setText(this.dueTime, '');
    this.triageReasons.replaceChildren();
    delete this.triageReasons.dataset.signature;
    this.renderTranscript(null, null);
  }

  private newTranscript(): HTMLDivElement {
    const log = el('div', { id: 'transcript', className: 'transcript' });
    log.setAttribute('role', 'log');
    log.setAttribute('aria-live', 'polite');
    log.setAttribute('aria-label', this.s.transcriptLabel);
    log.tabIndex = 0;
    log.dataset.empty = this.s.transcriptEmpty;
    return log;
  }

  /**
   * Keyed by message id: new messages are appended (and announced once); existing ones are
   * only updated. Another case gets a fresh log element, so switching cases does not read the
   * whole conversation aloud.
   */
  private renderTranscript(caseId: string | null, messages: readonly CaseMessage[] | null): void {
    let switched = false;
    if (caseId !== this.transcriptCaseId) {
      const fresh = this.newTranscript();
      this.transcript.replaceWith(fresh);
      this.transcript = fresh;
      this.messageNodes.clear();
      this.transcriptCaseId = caseId;
      switched = true;
    }
    const log = this.transcript;
    setAttr(log, 'data-loaded', messages !== null ? 'true' : null);
    if (messages === null) return;
    const wasNearEnd = log.scrollHeight - log.scrollTop - log.clientHeight < NEAR_END_PX;
    const wanted = new Set(messages.map((m) => m.id));
    for (const [id, node] of this.messageNodes) {
      if (!wanted.has(id)) {
        node.remove();
        this.messageNodes.delete(id);
      }
    }
    let added = false;
    let cursor: ChildNode | null = log.firstChild;
    for (const m of messages) {
      let node = this.messageNodes.get(m.id);
      if (!node) {
        node = this.createMessage();
        this.messageNodes.set(m.id, node);
        added = true;
      }
      this.updateMessage(node, m);
      if (node === cursor) cursor = cursor.nextSibling;
      else log.insertBefore(node, cursor);
    }
    if (switched || (added && wasNearEnd)) log.scrollTop = log.scrollHeight;
  }

  private createMessage(): HTMLElement {
    const node = el('article', { className: 'tmsg' });
    const head = el('p', { className: 'tmsg-head' });
    head.append(el('span', { className: 'tmsg-sender' }), el('time', { className: 'tmsg-time' }), el('span', { className: 'tmsg-status' }));
    const text = el('p', { className: 'tmsg-text prewrap' });
    text.dir = 'auto';
    node.append(head, text);
    return node;
  }

  private updateMessage(node: HTMLElement, m: CaseMessage): void {
    setAttr(node, 'class', `tmsg tmsg--${m.sender}`);
    setAttr(node, 'data-message-id', m.id);
    setAttr(node, 'data-sender', m.sender);
    setAttr(node, 'data-seq', String(m.seq));
    setAttr(node, 'data-direction', m.direction);
    setAttr(node, 'data-status', m.status);
    setText(node.querySelector('.tmsg-sender')!, senderLabel(this.s, m.sender));
    setTime(node.querySelector<HTMLTimeElement>('.tmsg-time')!, m.created_at, '');
    setText(node.querySelector('.tmsg-status')!, clean(m.status));
    setText(node.querySelector('.tmsg-text')!, clean(m.text));
  }
}
