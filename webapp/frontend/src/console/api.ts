// The admin case API (/admin/api/v1/cases…): types, defensive parsers and a small fetch
// wrapper. Everything from the network is `unknown` until a parser here accepts it; a case or
// message that does not match the contract is rejected (and counted), never half-rendered.

export type Priority = 'immediate' | 'high' | 'normal';
export type Reason = 'emergency' | 'crisis' | 'triage' | 'request' | 'unanswered';
export type CaseStatus = 'open' | 'claimed' | 'handed_back' | 'resolved';
export type Channel = 'web' | 'sms' | 'voice' | 'api';
export type Sender = 'patient' | 'bot' | 'staff' | 'system';
export type Direction = 'inbound' | 'outbound';
export type Delivery = 'sent' | 'queued' | 'not_sent';
export type CaseFilter = 'active' | 'all';

export interface Triage {
  disposition: string;
  reasons: string[];
}

export interface Case {
  /** Always a string here, even when the server sends a number. */
  id: string;
  conversation_id: string;
  priority: Priority;
  reason: Reason;
  status: CaseStatus;
  channel: Channel;
  language: string;
  created_at: string;
  due_at: string | null;
  overdue: boolean;
  claimed_by: string | null;
  claimed_at: string | null;
  triage: Triage | null;
  summary_patient: string;
  summary_clinician: string;
  rule_ids: string[];
}

export interface CaseMessage {
  id: string;
  seq: number;
  direction: Direction;
  sender: Sender;
  text: string;
  created_at: string;
  status: string;
}

/** A parsed list plus how many entries were rejected, so nothing disappears silently. */
export interface Parsed<T> {
  items: T[];
  skipped: number;
}

export interface CaseList {
  cases: Case[];
  skipped: number;
}

export interface CaseDetail {
  case: Case;
  messages: CaseMessage[];
  skippedMessages: number;
}

export interface ReplyResult {
  /** null when the server answered 2xx but its body could not be read. */
  message: CaseMessage | null;
  delivery: Delivery | 'unknown';
  notice: string | null;
}

export type Role = 'admin' | 'staff' | 'auditor';

/** The signed-in user, as /auth/login and /auth/me describe them. */
export interface User {
  username: string;
  displayName: string;
  role: Role;
}

/** A session: the bearer token and who it belongs to. */
export interface Credentials extends User {
  token: string;
  /** ISO time the server said the token expires, or null when it did not say. */
  expiresAt: string | null;
}

/**
 * `status` is the HTTP status, or 0 when no usable answer came back. `code` is the server's
 * error code, or `network` / `bad_response` / `http_<status>` when it sent none.
 */
export interface ApiFailure {
  ok: false;
  status: number;
  code: string;
  message: string;
  /** Seconds to wait before trying again (429 with Retry-After). */
  retryAfterS?: number;
}

export type ApiResult<T> = { ok: true; value: T } | ApiFailure;

const PRIORITIES: ReadonlySet<string> = new Set(['immediate', 'high', 'normal']);
const REASONS: ReadonlySet<string> = new Set(['emergency', 'crisis', 'triage', 'request', 'unanswered']);
const STATUSES: ReadonlySet<string> = new Set(['open', 'claimed', 'handed_back', 'resolved']);
const CHANNELS: ReadonlySet<string> = new Set(['web', 'sms', 'voice', 'api']);
const SENDERS: ReadonlySet<string> = new Set(['patient', 'bot', 'staff', 'system']);
const DIRECTIONS: ReadonlySet<string> = new Set(['inbound', 'outbound']);
const DELIVERIES: ReadonlySet<string> = new Set(['sent', 'queued', 'not_sent']);

/** Longest id / short label accepted; longer ones are treated as malformed. */
const MAX_ID = 200;
const MAX_LABEL = 200;

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function oneOf<T extends string>(set: ReadonlySet<string>, x: unknown): T | null {
  return typeof x === 'string' && set.has(x) ? (x as T) : null;
}

/** Non-empty string, or a non-negative integer (as a string). */
function parseId(x: unknown): string | null {
  if (typeof x === 'string' && x !== '' && x.length <= MAX_ID) return x;
  if (typeof x === 'number' && Number.isSafeInteger(x) && x >= 0) return String(x);
  return null;
}

/** ISO 8601 date-time without a zone ("2025-01-01T10:00:00.123456"). */
const NO_ZONE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/;

/**
 * An ISO 8601 timestamp Date can read, or null. The server keeps UTC, so one without a zone
 * is read as UTC (not as the browser's local time).
 */
function timestamp(x: unknown): string | null {
  if (typeof x !== 'string' || x === '' || x.length > 40) return null;
  const iso = NO_ZONE.test(x) ? `${x}Z` : x;
  return Number.isNaN(Date.parse(iso)) ? null : iso;
}

/** undefined = malformed; null = explicitly absent. */
function optionalTimestamp(x: unknown): string | null | undefined {
  if (x === null) return null;
  return timestamp(x) ?? undefined;
}

function stringArray(x: unknown): string[] | null {
  if (!Array.isArray(x)) return null;
  return x.every((s) => typeof s === 'string') ? (x as string[]) : null;
}

/** `{disposition, reasons}`; a triage that reached no disposition (null) reads as ''. */
function parseTriage(x: unknown): Triage | null | undefined {
  if (x === null) return null;
  if (!isRecord(x)) return undefined;
  const disposition = x.disposition === null ? '' : x.disposition;
  if (typeof disposition !== 'string') return undefined;
  const reasons = stringArray(x.reasons);
  if (reasons === null) return undefined;
  return { disposition, reasons };
}

/** A Case, or null when any field is missing or does not match the contract. */
export function parseCase(x: unknown): Case | null {
  if (!isRecord(x)) return null;
  const id = parseId(x.id);
  const conversation_id = parseId(x.conversation_id);
  const priority = oneOf<Priority>(PRIORITIES, x.priority);
  const reason = oneOf<Reason>(REASONS, x.reason);
  const status = oneOf<CaseStatus>(STATUSES, x.status);
  const channel = oneOf<Channel>(CHANNELS, x.channel);
  if (id === null || conversation_id === null || !priority || !reason || !status || !channel) return null;
  const { language, overdue, claimed_by, summary_patient, summary_clinician } = x;
  if (typeof language !== 'string' || language === '' || language.length > 35) return null;
  const created_at = timestamp(x.created_at);
  if (created_at === null || typeof overdue !== 'boolean') return null;
  const due_at = optionalTimestamp(x.due_at);
  const claimed_at = optionalTimestamp(x.claimed_at);
  if (due_at === undefined || claimed_at === undefined) return null;
  if (claimed_by !== null && (typeof claimed_by !== 'string' || claimed_by.length > MAX_LABEL)) return null;
  const triage = parseTriage(x.triage);
  if (triage === undefined) return null;
  if (typeof summary_patient !== 'string' || typeof summary_clinician !== 'string') return null;
  const rule_ids = stringArray(x.rule_ids);
  if (rule_ids === null) return null;
  return {
    id,
    conversation_id,
    priority,
    reason,
    status,
    channel,
    language,
    created_at,
    due_at,
    overdue,
    claimed_by,
    claimed_at,
    triage,
    summary_patient,
    summary_clinician,
    rule_ids,
  };
}

/** A CaseMessage, or null when any field is missing or does not match the contract. */
export function parseMessage(x: unknown): CaseMessage | null {
  if (!isRecord(x)) return null;
  const id = parseId(x.id);
  const direction = oneOf<Direction>(DIRECTIONS, x.direction);
  const sender = oneOf<Sender>(SENDERS, x.sender);
  const { seq, text, status } = x;
  const created_at = timestamp(x.created_at);
  if (id === null || !direction || !sender) return null;
  if (typeof seq !== 'number' || !Number.isFinite(seq)) return null;
  if (typeof text !== 'string' || created_at === null) return null;
  if (typeof status !== 'string' || status.length > MAX_LABEL) return null;
  return { id, seq, direction, sender, text, created_at, status };
}

function parseAll<T>(x: unknown, parse: (item: unknown) => T | null): Parsed<T> | null {
  if (!Array.isArray(x)) return null;
  const items: T[] = [];
  let skipped = 0;
  for (const entry of x) {
    const item = parse(entry);
    if (item === null) skipped++;
    else items.push(item);
  }
  return { items, skipped };
}

/** `{"cases": [Case]}`, in the server's order (most urgent first); bad entries are counted. */
export function parseCaseList(x: unknown): CaseList | null {
  if (!isRecord(x)) return null;
  const parsed = parseAll(x.cases, parseCase);
  if (parsed === null) return null;
  // The same id twice would make two rows for one case: keep the first.
  const seen = new Set<string>();
  const cases: Case[] = [];
  let skipped = parsed.skipped;
  for (const c of parsed.items) {
    if (seen.has(c.id)) skipped++;
    else {
      seen.add(c.id);
      cases.push(c);
    }
  }
  return { cases, skipped };
}

/** `{"case": Case, "messages": [Msg]}`; messages come back ordered by seq, duplicates dropped. */
export function parseCaseDetail(x: unknown): CaseDetail | null {
  if (!isRecord(x)) return null;
  const c = parseCase(x.case);
  const parsed = parseAll(x.messages, parseMessage);
  if (c === null || parsed === null) return null;
  const seen = new Set<string>();
  const messages: CaseMessage[] = [];
  let skipped = parsed.skipped;
  for (const m of parsed.items) {
    if (seen.has(m.id)) skipped++;
    else {
      seen.add(m.id);
      messages.push(m);
    }
  }
  messages.sort((a, b) => a.seq - b.seq);
  return { case: c, messages, skippedMessages: skipped };
}

/** `{"case": Case}` (claim, handback, resolve). */
export function parseCaseEnvelope(x: unknown): Case | null {
  return isRecord(x) ? parseCase(x.case) : null;
}

/**
 * `{"message": Msg, "delivery": …, "notice": string|null}`. The server has already accepted
 * the reply when this is called (2xx), so an unreadable body is reported as delivery
 * `unknown` instead of an error: sending it again could reach the patient twice.
 */
export function parseReplyResult(x: unknown): ReplyResult {
  if (!isRecord(x)) return { message: null, delivery: 'unknown', notice: null };
  const delivery = oneOf<Delivery>(DELIVERIES, x.delivery) ?? 'unknown';
  const notice = typeof x.notice === 'string' && x.notice.trim() !== '' ? x.notice : null;
  return { message: parseMessage(x.message), delivery, notice };
}

/** `{"error": {"code", "message"}}` from a 4xx/5xx; anything else gets a code from the status. */
export function parseError(status: number, x: unknown): ApiFailure {
  const err = isRecord(x) && isRecord(x.error) ? x.error : null;
  const code = err && typeof err.code === 'string' && err.code !== '' ? err.code : `http_${status}`;
  const message = err && typeof err.message === 'string' ? err.message.trim() : '';
  return { ok: false, status, code, message };
}


// ---- sign-in -------------------------------------------------------------------------------

const ROLES: ReadonlySet<string> = new Set(['admin', 'staff', 'auditor']);

/** `{"username", "display_name", "role"}` (/auth/me, and the `user` of /auth/login). */
export function parseUser(x: unknown): User | null {
  if (!isRecord(x)) return null;
  const { username, display_name } = x;
  const role = oneOf<Role>(ROLES, x.role);
  if (typeof username !== 'string' || username === '' || username.length > MAX_LABEL || role === null) return null;
  const displayName = typeof display_name === 'string' && display_name.trim() !== '' ? display_name : username;
  if (displayName.length > MAX_LABEL) return null;
  return { username, displayName, role };
}

/** `{"token", "expires_at", "user"}` from POST /auth/login. */
export function parseLogin(x: unknown): Credentials | null {
  if (!isRecord(x)) return null;
  const user = parseUser(x.user);
  const { token } = x;
  if (user === null || typeof token !== 'string' || !/^[\x21-\x7E]+$/.test(token)) return null;
  const expiresAt = x.expires_at === undefined ? null : optionalTimestamp(x.expires_at);
  if (expiresAt === undefined) return null;
  return { ...user, token, expiresAt };
}

// ---- conversations -------------------------------------------------------------------------

export interface ConversationSummary {
  id: string;
  channel: Channel;
  language: string;
  mode: string;
  safety_level: string;
  started_at: string;
  last_message_at: string;
  message_count: number;
}

export interface ConversationPage {
  conversations: ConversationSummary[];
  skipped: number;
  nextBefore: string | null;
}

export interface TranscriptMessage extends CaseMessage {
  channel: Channel;
}

export interface Transcript {
  conversationId: string;
  messages: TranscriptMessage[];
  skippedMessages: number;
}

function shortLabel(x: unknown): string | null {
  return typeof x === 'string' && x.length <= MAX_LABEL ? x : null;
}

export function parseConversation(x: unknown): ConversationSummary | null {
  if (!isRecord(x)) return null;
  const id = parseId(x.id);
  const channel = oneOf<Channel>(CHANNELS, x.channel);
  const language = shortLabel(x.language);
  const mode = shortLabel(x.mode);
  const safety_level = shortLabel(x.safety_level);
  const started_at = timestamp(x.started_at);
  const last_message_at = timestamp(x.last_message_at);
  const count = x.message_count;
  if (id === null || channel === null || language === null || mode === null || safety_level === null) return null;
  if (started_at === null || last_message_at === null) return null;
  if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 0) return null;
  return { id, channel, language, mode, safety_level, started_at, last_message_at, message_count: count };
}

export function parseConversationPage(x: unknown): ConversationPage | null {
  if (!isRecord(x)) return null;
  const parsed = parseAll(x.conversations, parseConversation);
  if (parsed === null) return null;
  const nextBefore = x.next_before === null || x.next_before === undefined ? null : timestamp(x.next_before);
  if (nextBefore === null && x.next_before !== null && x.next_before !== undefined) return null;
  // The server's next_before is echoed back verbatim: keep its own spelling.
  const next = nextBefore === null ? null : String(x.next_before);
  return { conversations: parsed.items, skipped: parsed.skipped, nextBefore: next };
}

function parseTranscriptMessage(x: unknown): TranscriptMessage | null {
  const m = parseMessage(x);
  const channel = isRecord(x) ? oneOf<Channel>(CHANNELS, x.channel) : null;
  return m === null || channel === null ? null : { ...m, channel };
}

/** `{"conversation_id", "messages": [...]}` from /conversations/{id}/messages. */
export function parseTranscript(x: unknown): Transcript | null {
  if (!isRecord(x)) return null;
  const conversationId = parseId(x.conversation_id);
  const parsed = parseAll(x.messages, parseTranscriptMessage);
  if (conversationId === null || parsed === null) return null;
  const messages = [...parsed.items].sort((a, b) => a.seq - b.seq);
  return { conversationId, messages, skippedMessages: parsed.skipped };
}

// ---- knowledge base ------------------------------------------------------------------------

export interface KbJob {
  id: string;
  filename: string;
  size_bytes: number;
  language: string | null;
  status: string;
  error: string | null;
  created_at: string;
  finished_at: string | null;
}

export function parseKbJob(x: unknown): KbJob | null {
  if (!isRecord(x)) return null;
  const id = parseId(x.id);
  const filename = shortLabel(x.filename);
  const status = shortLabel(x.status);
  const created_at = timestamp(x.created_at);
  const finished_at = optionalTimestamp(x.finished_at ?? null);
  const size = x.size_bytes;
  if (id === null || filename === null || status === null || created_at === null || finished_at === undefined) return null;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) return null;
  const language = typeof x.language === 'string' ? x.language : null;
  const error = typeof x.error === 'string' && x.error !== '' ? x.error : null;
  return { id, filename, size_bytes: size, language, status, error, created_at, finished_at };
}

export function parseKbJobs(x: unknown): Parsed<KbJob> | null {
  return isRecord(x) ? parseAll(x.jobs, parseKbJob) : null;
}

// ---- dashboard -----------------------------------------------------------------------------

export const DISPOSITIONS = ['emergency', 'urgent', 'routine', 'self_care'] as const;
export type Disposition = (typeof DISPOSITIONS)[number];

export interface DayCount {
  day: string;
  channel: string;
  count: number;
}

export interface Dashboard {
  days: number;
  messagesPerChannel: Record<string, number>;
  messagesPerDay: DayCount[];
  escalations: { total: number; open: number; claimedInTime: number; missedDeadline: number };
  triageMix: Record<Disposition, number>;
  latency: { p50: number | null; p95: number | null; samples: number };
}

function count(x: unknown): number | null {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0 ? x : null;
}

function optionalMs(x: unknown): number | null | undefined {
  if (x === null) return null;
  return typeof x === 'number' && Number.isFinite(x) && x >= 0 ? x : undefined;
}

const DAY_RE = /^\d{4}-\d{2}-\d{2}$/;

export function parseDashboard(x: unknown): Dashboard | null {
  if (!isRecord(x)) return null;
  const days = count(x.days);
  const perChannel = x.messages_per_channel;
  const perDay = x.messages_per_day;
  const esc = x.escalations;
  const mix = x.triage_mix;
  const lat = x.latency_ms;
  if (days === null || !isRecord(perChannel) || !Array.isArray(perDay) || !isRecord(esc) || !isRecord(mix) || !isRecord(lat)) {
    return null;
  }
  const messagesPerChannel: Record<string, number> = {};
  for (const [channel, n] of Object.entries(perChannel)) {
    const value = count(n);
    if (value === null || channel.length > 32) return null;
    messagesPerChannel[channel] = value;
  }
  const messagesPerDay: DayCount[] = [];
  for (const entry of perDay) {
    if (!isRecord(entry)) return null;
    const n = count(entry.count);
    if (typeof entry.day !== 'string' || !DAY_RE.test(entry.day) || typeof entry.channel !== 'string' || n === null) return null;
    messagesPerDay.push({ day: entry.day, channel: entry.channel, count: n });
  }
  const total = count(esc.total);
  const open = count(esc.open);
  const claimedInTime = count(esc.claimed_in_time);
  const missedDeadline = count(esc.missed_deadline);
  if (total === null || open === null || claimedInTime === null || missedDeadline === null) return null;
  const triageMix = {} as Record<Disposition, number>;
  for (const d of DISPOSITIONS) {
    const n = count(mix[d] ?? 0);
    if (n === null) return null;
    triageMix[d] = n;
  }
  const p50 = optionalMs(lat.p50);
  const p95 = optionalMs(lat.p95);
  const samples = count(lat.samples);
  if (p50 === undefined || p95 === undefined || samples === null) return null;
  return {
    days,
    messagesPerChannel,
    messagesPerDay,
    escalations: { total, open, claimedInTime, missedDeadline },
    triageMix,
    latency: { p50, p95, samples },
  };
}

// ---- audit ---------------------------------------------------------------------------------

export interface AuditEntry {
  id: string;
  at: string;
  actor: string;
  action: string;
  patient_id: string | null;
  conversation_id: string | null;
  detail: string;
  hash: string | null;
}

export interface AuditPage {
  events: AuditEntry[];
  skipped: number;
  nextBeforeId: string | null;
}

export interface AuditVerdict {
  ok: boolean;
  checked: number;
  firstBadId: string | null;
}

function optionalId(x: unknown): string | null | undefined {
  if (x === null || x === undefined) return null;
  return parseId(x) ?? undefined;
}

export function parseAuditEntry(x: unknown): AuditEntry | null {
  if (!isRecord(x)) return null;
  const id = parseId(x.id);
  const at = timestamp(x.at);
  const actor = shortLabel(x.actor);
  const action = shortLabel(x.action);
  const patient_id = optionalId(x.patient_id);
  const conversation_id = optionalId(x.conversation_id);
  if (id === null || at === null || actor === null || action === null) return null;
  if (patient_id === undefined || conversation_id === undefined) return null;
  const hash = typeof x.hash === 'string' ? x.hash : null;
  // Details are small records without patient text; shown compactly as JSON.
  const detail = x.detail === undefined || x.detail === null ? '' : JSON.stringify(x.detail);
  return { id, at, actor, action, patient_id, conversation_id, detail, hash };
}

export function parseAuditPage(x: unknown): AuditPage | null {
  if (!isRecord(x)) return null;
  const parsed = parseAll(x.events, parseAuditEntry);
  const next = optionalId(x.next_before_id);
  if (parsed === null || next === undefined) return null;
  return { events: parsed.items, skipped: parsed.skipped, nextBeforeId: next };
}

export function parseAuditVerdict(x: unknown): AuditVerdict | null {
  if (!isRecord(x) || typeof x.ok !== 'boolean') return null;
  const checked = count(x.checked);
  const firstBadId = optionalId(x.first_bad_id);
  if (checked === null || firstBadId === undefined) return null;
  return { ok: x.ok, checked, firstBadId };
}

// ---- the client ----------------------------------------------------------------------------

export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export const API_BASE = '/admin/api/v1';
const DEFAULT_TIMEOUT_MS = 15000;
/** Replies can wait on an SMS provider before the server answers. */
const REPLY_TIMEOUT_MS = 30000;
const UPLOAD_TIMEOUT_MS = 120000;

function failure(status: number, code: string, message = ''): ApiFailure {
  return { ok: false, status, code, message };
}

function readJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

const defaultFetch: FetchLike = (url, init) => fetch(url, init);

async function call<T>(
  fetchFn: FetchLike,
  url: string,
  method: 'GET' | 'POST',
  parse: (body: unknown) => T | null,
  options: { token?: string; body?: unknown; timeoutMs?: number } = {},
): Promise<ApiResult<T>> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  // The token goes in this header only, never a cookie: a browser never sends it on its own.
  if (options.token !== undefined) headers.Authorization = `Bearer ${options.token}`;
  const init: RequestInit = { method, headers, cache: 'no-store', credentials: 'same-origin' };
  if (options.body instanceof FormData) {
    init.body = options.body;
  } else if (options.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(options.body);
  }
  const controller = new AbortController();
  init.signal = controller.signal;
  const timer = setTimeout(() => controller.abort(), options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  let status: number;
  let text: string;
  let retryAfter: string | null = null;
  try {
    const response = await fetchFn(url, init);
    status = response.status;
    retryAfter = response.headers?.get?.('Retry-After') ?? null;
    text = await response.text();
  } catch {
    return failure(0, 'network');
  } finally {
    clearTimeout(timer);
  }
  const json = readJson(text);
  if (status < 200 || status > 299) {
    const f = parseError(status, json);
    if (retryAfter !== null && /^\d+$/.test(retryAfter)) f.retryAfterS = Number(retryAfter);
    return f;
  }
  const value = parse(json);
  if (value === null) return failure(status, 'bad_response');
  return { ok: true, value };
}

/** POST /auth/login: a session for a username and password. */
export function login(
  username: string,
  password: string,
  fetchFn: FetchLike = defaultFetch,
  base: string = API_BASE,
): Promise<ApiResult<Credentials>> {
  return call(fetchFn, `${base}/auth/login`, 'POST', parseLogin, { body: { username, password } });
}

/** One signed-in user's client for the admin API. */
export class ConsoleApi {
  constructor(
    private readonly creds: Pick<Credentials, 'token'>,
    private readonly fetchFn: FetchLike = defaultFetch,
    private readonly base: string = API_BASE,
  ) {}

  me(): Promise<ApiResult<User>> {
    return this.request('GET', '/auth/me', parseUser);
  }

  /** Ends this user's sessions on the server; the answer carries nothing to read. */
  logout(): Promise<ApiResult<true>> {
    return this.request('POST', '/auth/logout', () => true);
  }

  listCases(filter: CaseFilter): Promise<ApiResult<CaseList>> {
    return this.request('GET', `/cases?status=${filter}`, parseCaseList);
  }

  getCase(id: string): Promise<ApiResult<CaseDetail>> {
    return this.request('GET', this.casePath(id), parseCaseDetail);
  }

  claim(id: string): Promise<ApiResult<Case>> {
    return this.request('POST', `${this.casePath(id)}/claim`, parseCaseEnvelope);
  }

  handback(id: string): Promise<ApiResult<Case>> {
    return this.request('POST', `${this.casePath(id)}/handback`, parseCaseEnvelope);
  }

  resolve(id: string): Promise<ApiResult<Case>> {
    return this.request('POST', `${this.casePath(id)}/resolve`, parseCaseEnvelope);
  }

  reply(id: string, text: string): Promise<ApiResult<ReplyResult>> {
    return this.request('POST', `${this.casePath(id)}/reply`, parseReplyResult, { text }, REPLY_TIMEOUT_MS);
  }

  listConversations(before: string | null): Promise<ApiResult<ConversationPage>> {
    const query = before === null ? '' : `&before=${encodeURIComponent(before)}`;
    return this.request('GET', `/conversations?limit=50${query}`, parseConversationPage);
  }

  transcript(id: string): Promise<ApiResult<Transcript>> {
    return this.request('GET', `/conversations/${encodeURIComponent(id)}/messages`, parseTranscript);
  }

  kbJobs(): Promise<ApiResult<Parsed<KbJob>>> {
    return this.request('GET', '/kb/jobs', parseKbJobs);
  }

  uploadDocument(file: Blob, filename: string, language: string | null): Promise<ApiResult<KbJob>> {
    const form = new FormData();
    form.append('file', file, filename);
    if (language !== null) form.append('language', language);
    return this.request('POST', '/kb/documents', parseKbJob, form, UPLOAD_TIMEOUT_MS);
  }

  dashboard(days: number): Promise<ApiResult<Dashboard>> {
    return this.request('GET', `/dashboard?days=${days}`, parseDashboard);
  }

  audit(beforeId: string | null): Promise<ApiResult<AuditPage>> {
    const query = beforeId === null ? '' : `&before_id=${encodeURIComponent(beforeId)}`;
    return this.request('GET', `/audit?limit=100${query}`, parseAuditPage);
  }

  verifyAudit(): Promise<ApiResult<AuditVerdict>> {
    return this.request('GET', '/audit/verify', parseAuditVerdict);
  }

  private casePath(id: string): string {
    return `/cases/${encodeURIComponent(id)}`;
  }

  private request<T>(
    method: 'GET' | 'POST',
    path: string,
    parse: (body: unknown) => T | null,
    body?: unknown,
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): Promise<ApiResult<T>> {
    return call(this.fetchFn, `${this.base}${path}`, method, parse, { token: this.creds.token, body, timeoutMs });
  }
}
