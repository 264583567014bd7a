// Pure logic of the staff console: what the page holds, which actions a staff member may take
// on a case, labels, and waiting-time text. No DOM, no network, no clock (callers pass `now`).

import { format } from '../i18n';
import type {
  ApiFailure,
  Case,
  CaseDetail,
  CaseFilter,
  CaseStatus,
  Channel,
  AuditPage,
  AuditVerdict,
  ConversationSummary,
  Dashboard,
  KbJob,
  Priority,
  Reason,
  ReplyResult,
  Role,
  Sender,
  Transcript,
  User,
} from './api';
import type { ConsoleStrings } from './strings';

export type Phase = 'signin' | 'console';
export type Tab = 'cases' | 'conversations' | 'kb' | 'dashboard' | 'audit';
export const TABS: readonly Tab[] = ['cases', 'conversations', 'kb', 'dashboard', 'audit'];
export type CaseAction = 'claim' | 'handback' | 'resolve';
export type Busy = CaseAction | 'reply' | null;

export interface Notice {
  text: string;
  /** `warning` for anything the staff member must act on (a reply that did not reach the patient). */
  tone: 'info' | 'warning';
}

/** Everything the view needs to draw the page. */
export interface ConsoleState {
  phase: Phase;
  /** A sign-in request is in flight. */
  signingIn: boolean;
  /** Who is signed in (null while signed out). */
  user: User | null;
  /** The signed-in staff member's display name ('' while signed out): how cases name them. */
  staffName: string;
  /** Username to put back into the sign-in form (after a refused password). */
  nameDraft: string;
  tab: Tab;
  filter: CaseFilter;
  /** null until the first list arrives (after sign-in or a filter change). */
  cases: Case[] | null;
  /** List entries the server sent in a form the parser refused. */
  skippedCases: number;
  selectedId: string | null;
  /** Detail of the selected case once loaded (always for selectedId, or null). */
  detail: CaseDetail | null;
  busy: Busy;
  /** Reply text being written for the selected case. */
  replyDraft: string;
  notice: Notice | null;
  error: string | null;
  /** When the page was last drawn, ms since the epoch (waiting times are relative to it). */
  now: number;
  /** When the list last came back successfully. */
  updatedAt: number | null;
  conversations: ConversationsState;
  kb: KbState;
  dashboard: DashboardState;
  audit: AuditState;
}

export interface ConversationsState {
  /** null until the first page arrives. */
  items: ConversationSummary[] | null;
  skipped: number;
  nextBefore: string | null;
  loading: boolean;
  selectedId: string | null;
  transcript: Transcript | null;
}

export interface KbState {
  jobs: KbJob[] | null;
  skipped: number;
  uploading: boolean;
}

export interface DashboardState {
  days: number;
  data: Dashboard | null;
  loading: boolean;
}

export interface AuditState {
  page: AuditPage | null;
  /** The server has no audit log API (yet): say so instead of an error. */
  unavailable: boolean;
  loading: boolean;
  verdict: AuditVerdict | null;
  verifying: boolean;
}

export const DASHBOARD_DAYS = 7;

export function initialState(now: number): ConsoleState {
  return {
    phase: 'signin',
    signingIn: false,
    user: null,
    staffName: '',
    nameDraft: '',
    tab: 'cases',
    filter: 'active',
    cases: null,
    skippedCases: 0,
    selectedId: null,
    detail: null,
    busy: null,
    replyDraft: '',
    notice: null,
    error: null,
    now,
    updatedAt: null,
    conversations: { items: null, skipped: 0, nextBefore: null, loading: false, selectedId: null, transcript: null },
    kb: { jobs: null, skipped: 0, uploading: false },
    dashboard: { days: DASHBOARD_DAYS, data: null, loading: false },
    audit: { page: null, unavailable: false, loading: false, verdict: null, verifying: false },
  };
}

// ---- roles -------------------------------------------------------------------------------

/** Admins and staff work cases; auditors only read them. */
export function canWorkCases(role: Role | undefined): boolean {
  return role === 'admin' || role === 'staff';
}

/** The sections a role sees, in order. */
export function tabsFor(role: Role | undefined): Tab[] {
  switch (role) {
    case 'admin':
      return ['cases', 'conversations', 'kb', 'dashboard', 'audit'];
    case 'staff':
      return ['cases', 'conversations', 'kb', 'dashboard'];
    case 'auditor':
      return ['cases', 'conversations', 'dashboard', 'audit'];
    default:
      return [];
  }
}

export function canUpload(role: Role | undefined): boolean {
  return role === 'admin';
}

export function roleLabel(s: ConsoleStrings, role: Role): string {
  return role === 'admin' ? s.roleAdmin : role === 'staff' ? s.roleStaff : s.roleAuditor;
}

export function tabLabel(s: ConsoleStrings, tab: Tab): string {
  switch (tab) {
    case 'cases':
      return s.tabCases;
    case 'conversations':
      return s.tabConversations;
    case 'kb':
      return s.tabKb;
    case 'dashboard':
      return s.tabDashboard;
    case 'audit':
      return s.tabAudit;
  }
}

/** The case shown in the detail pane: the loaded detail, else the list's copy while it loads. */
export function selectedCase(state: Pick<ConsoleState, 'selectedId' | 'detail' | 'cases'>): Case | null {
  if (state.selectedId === null) return null;
  if (state.detail && state.detail.case.id === state.selectedId) return state.detail.case;
  return state.cases?.find((c) => c.id === state.selectedId) ?? null;
}

/** Active = still needs staff: open or claimed. Handed-back and resolved cases are under "all" only. */
export function isActive(c: Case): boolean {
  return c.status === 'open' || c.status === 'claimed';
}

/** The cases to list for a filter, in the server's order (it sorts most urgent first). */
export function visibleCases(cases: readonly Case[], filter: CaseFilter): Case[] {
  return filter === 'active' ? cases.filter(isActive) : [...cases];
}

/** Names are compared as the server stores them: trimmed, otherwise exact. */
export function sameStaff(claimedBy: string | null, staffName: string): boolean {
  return claimedBy !== null && staffName.trim() !== '' && claimedBy.trim() === staffName.trim();
}

/** Claimed, and by this staff member. */
export function isMine(c: Case, staffName: string): boolean {
  return c.status === 'claimed' && sameStaff(c.claimed_by, staffName);
}

export interface Permissions {
  claim: boolean;
  handback: boolean;
  resolve: boolean;
  /** The reply box is usable (the send button also needs some text). */
  reply: boolean;
}

const NONE: Permissions = { claim: false, handback: false, resolve: false, reply: false };

/**
 * What the staff member may do with a case. Nothing while another action is in flight, and
 * nothing on a case a colleague has claimed (it is theirs; the page does not take it over).
 * - Claim: an open case.
 * - Reply: only the staff member who claimed it.
 * - Hand back to the bot: an open case, or one this staff member has claimed.
 * - Resolve: any case not yet resolved, except a colleague's.
 */
export function permissions(c: Case | null, staffName: string, busy: Busy, role: Role = 'staff'): Permissions {
  if (c === null || busy !== null || !canWorkCases(role)) return NONE;
  const mine = isMine(c, staffName);
  const open = c.status === 'open';
  return {
    claim: open,
    handback: open || mine,
    resolve: open || mine || c.status === 'handed_back',
    reply: mine,
  };
}

export function canSend(state: ConsoleState): boolean {
  const c = selectedCase(state);
  return permissions(c, state.staffName, state.busy, state.user?.role).reply && state.replyDraft.trim() !== '';
}

// ---- labels ------------------------------------------------------------------------------

export function priorityLabel(s: ConsoleStrings, p: Priority): string {
  switch (p) {
    case 'immediate':
      return s.priorityImmediate;
    case 'high':
      return s.priorityHigh;
    case 'normal':
      return s.priorityNormal;
  }
}

export function reasonLabel(s: ConsoleStrings, r: Reason): string {
  switch (r) {
    case 'emergency':
      return s.reasonEmergency;
    case 'crisis':
      return s.reasonCrisis;
    case 'triage':
      return s.reasonTriage;
    case 'request':
      return s.reasonRequest;
    case 'unanswered':
      return s.reasonUnanswered;
  }
}

export function statusLabel(s: ConsoleStrings, st: CaseStatus): string {
  switch (st) {
    case 'open':
      return s.statusOpen;
    case 'claimed':
      return s.statusClaimed;
    case 'handed_back':
      return s.statusHandedBack;
    case 'resolved':
      return s.statusResolved;
  }
}

export function channelLabel(s: ConsoleStrings, ch: Channel): string {
  switch (ch) {
    case 'web':
      return s.channelWeb;
    case 'sms':
      return s.channelSms;
    case 'voice':
      return s.channelVoice;
    case 'api':
      return s.channelApi;
  }
}

export function senderLabel(s: ConsoleStrings, sender: Sender): string {
  switch (sender) {
    case 'patient':
      return s.senderPatient;
    case 'bot':
      return s.senderBot;
    case 'staff':
      return s.senderStaff;
    case 'system':
      return s.senderSystem;
  }
}

let languageNames: Intl.DisplayNames | null | undefined;

/** "Spanish (es)" for a language code; the bare code where the runtime cannot name it. */
export function languageLabel(code: string): string {
  if (languageNames === undefined) {
    try {
      languageNames = new Intl.DisplayNames(['en'], { type: 'language' });
    } catch {
      languageNames = null;
    }
  }
  try {
    const name = languageNames?.of(code);
    return name && name !== code ? `${name} (${code})` : code;
  } catch {
    return code;
  }
}

// ---- time --------------------------------------------------------------------------------

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** "under 1 min", "12 min", "2 h 5 min", "3 d 4 h". Negative spans (clock skew) count as 0. */
export function formatDuration(s: ConsoleStrings, ms: number): string {
  const span = Number.isFinite(ms) && ms > 0 ? ms : 0;
  if (span < MINUTE) return s.lessThanAMinute;
  if (span < HOUR) return format(s.minutes, { m: Math.floor(span / MINUTE) });
  if (span < DAY) {
    return format(s.hoursMinutes, { h: Math.floor(span / HOUR), m: Math.floor((span % HOUR) / MINUTE) });
  }
  return format(s.daysHours, { d: Math.floor(span / DAY), h: Math.floor((span % DAY) / HOUR) });
}

/** Time since the case was opened: "Waiting 12 min" while it is active, "Opened … ago" after. */
export function waitingText(s: ConsoleStrings, c: Case, now: number): string {
  const time = formatDuration(s, now - Date.parse(c.created_at));
  return format(isActive(c) ? s.waiting : s.opened, { time });
}

/** Who has the case, for the list row: claimed by you / by a colleague, unclaimed, or its status. */
export function ownerText(s: ConsoleStrings, c: Case, staffName: string): string {
  switch (c.status) {
    case 'open':
      return s.unclaimed;
    case 'claimed':
      if (sameStaff(c.claimed_by, staffName)) return s.claimedByYou;
      return c.claimed_by ? format(s.claimedBy, { name: c.claimed_by }) : s.statusClaimed;
    case 'handed_back':
    case 'resolved':
      return statusLabel(s, c.status);
  }
}

/** Why the reply box is (not) usable, shown under it. */
export function replyHint(s: ConsoleStrings, c: Case | null, staffName: string): string {
  if (c === null) return '';
  if (isMine(c, staffName)) return s.replyHint;
  if (c.status === 'claimed') return format(s.replyHintOtherClaimed, { name: c.claimed_by ?? s.none });
  if (c.status === 'resolved') return s.replyHintClosed;
  return s.replyHintNotClaimed;
}

// ---- results -----------------------------------------------------------------------------

/** What to tell the staff member after a reply went through; not_sent stands out. */
export function deliveryNotice(s: ConsoleStrings, result: ReplyResult): Notice {
  const extra = result.notice !== null ? ` ${result.notice}` : '';
  switch (result.delivery) {
    case 'sent':
      return { text: s.deliverySent + extra, tone: 'info' };
    case 'queued':
      return { text: s.deliveryQueued + extra, tone: 'info' };
    case 'not_sent':
      return {
        text: result.notice !== null ? format(s.deliveryNotSent, { notice: result.notice }) : s.deliveryNotSentNoReason,
        tone: 'warning',
      };
    case 'unknown':
      return { text: s.deliveryUnknown, tone: 'warning' };
  }
}

export function actionNotice(s: ConsoleStrings, action: CaseAction): Notice {
  const text = action === 'claim' ? s.claimed : action === 'handback' ? s.handedBack : s.resolved;
  return { text, tone: 'info' };
}

/** The text for a failed request: the server's own message where it gave one. */
export function errorText(s: ConsoleStrings, f: ApiFailure): string {
  if (f.code === 'network') return s.errNetwork;
  if (f.code === 'bad_response') return s.errBadResponse;
  if (f.status === 401) return f.code === 'unauthorized' || f.message === '' ? s.errUnauthorized : f.message;
  if (f.message !== '') return f.message;
  return format(s.errGeneric, { status: f.status });
}

// ---- sign-in -----------------------------------------------------------------------------

export const MAX_USERNAME = 150;
export const MAX_PASSWORD = 1024;

export type SignInCheck =
  | { ok: true; username: string; password: string }
  | { ok: false; field: 'username' | 'password'; message: string };

/** The form is complete enough to ask the server; whether it is right is the server's call. */
export function checkSignIn(s: ConsoleStrings, rawUsername: string, password: string): SignInCheck {
  const username = rawUsername.trim();
  if (username === '') return { ok: false, field: 'username', message: s.errUsernameEmpty };
  if (username.length > MAX_USERNAME) return { ok: false, field: 'username', message: s.errUsernameEmpty };
  if (password === '') return { ok: false, field: 'password', message: s.errPasswordEmpty };
  if (password.length > MAX_PASSWORD) return { ok: false, field: 'password', message: s.errPasswordTooLong };
  return { ok: true, username, password };
}

/** Why sign-in failed, in words that say what to do next. */
export function signInErrorText(s: ConsoleStrings, f: ApiFailure): string {
  if (f.status === 401) return s.errInvalidCredentials;
  if (f.status === 429) {
    const wait = f.retryAfterS !== undefined ? Math.max(1, Math.ceil(f.retryAfterS / 60)) : null;
    return wait !== null ? format(s.errTooManyAttemptsWait, { minutes: wait }) : s.errTooManyAttempts;
  }
  return errorText(s, f);
}

// ---- dashboard ---------------------------------------------------------------------------

const DAY_MS = 86_400_000;

/** The UTC calendar days the dashboard covers, oldest first, ending today ('YYYY-MM-DD'). */
export function dashboardDays(days: number, now: number): string[] {
  const today = Math.floor(now / DAY_MS) * DAY_MS;
  const out: string[] = [];
  for (let i = days - 1; i >= 0; i--) out.push(new Date(today - i * DAY_MS).toISOString().slice(0, 10));
  return out;
}

export interface DaySeries {
  labels: string[];
  /** One series per channel, a count per label. */
  series: { channel: string; counts: number[] }[];
}

/** Messages per channel per day as chart series: every day present, missing days as 0. */
export function perDaySeries(d: Dashboard, now: number): DaySeries {
  const labels = dashboardDays(d.days, now);
  for (const entry of d.messagesPerDay) if (!labels.includes(entry.day)) labels.push(entry.day);
  labels.sort();
  const channels = [...new Set([...Object.keys(d.messagesPerChannel), ...d.messagesPerDay.map((e) => e.channel)])];
  const series = channels.map((channel) => ({
    channel,
    counts: labels.map((day) =>
      d.messagesPerDay.filter((e) => e.day === day && e.channel === channel).reduce((n, e) => n + e.count, 0),
    ),
  }));
  return { labels, series };
}

/** "840 ms", "2.4 s", or "—" when nothing was measured. */
export function formatMs(s: ConsoleStrings, ms: number | null): string {
  if (ms === null) return s.none;
  if (ms < 1000) return format(s.milliseconds, { n: Math.round(ms) });
  return format(s.seconds, { n: (ms / 1000).toFixed(1) });
}

export function dispositionLabel(s: ConsoleStrings, d: string): string {
  switch (d) {
    case 'emergency':
      return s.dispositionEmergency;
    case 'urgent':
      return s.dispositionUrgent;
    case 'routine':
      return s.dispositionRoutine;
    case 'self_care':
      return s.dispositionSelfCare;
    default:
      return d;
  }
}

// ---- updates -----------------------------------------------------------------------------

/**
 * The list after an action returned a fresh copy of one case: replaced in place, or dropped
 * when it no longer belongs under the filter (resolved under "active").
 */
export function withCase(cases: readonly Case[] | null, c: Case, filter: CaseFilter): Case[] | null {
  if (cases === null) return null;
  const keep = filter === 'all' || isActive(c);
  const out: Case[] = [];
  for (const existing of cases) {
    if (existing.id !== c.id) out.push(existing);
    else if (keep) out.push(c);
  }
  return out;
}
