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

export interface Credentials {
  token: string;
  staffName: string;
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

export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export const API_BASE = '/admin/api/v1';
const DEFAULT_TIMEOUT_MS = 15000;
/** Replies can wait on an SMS provider before the server answers. */
const REPLY_TIMEOUT_MS = 30000;

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

/** One signed-in staff member's client for the case API. */
export class CaseApi {
  constructor(
    private readonly creds: Credentials,
    private readonly fetchFn: FetchLike = (url, init) => fetch(url, init),
    private readonly base: string = API_BASE,
  ) {}

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

  private casePath(id: string): string {
    return `/cases/${encodeURIComponent(id)}`;
  }

  private async request<T>(
    method: 'GET' | 'POST',
    path: string,
    parse: (body: unknown) => T | null,
    body?: unknown,
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): Promise<ApiResult<T>> {
    const headers: Record<string, string> = {
      Accept: 'application/json',
      Authorization: `Bearer ${this.creds.token}`,
      'X-Staff-Name': this.creds.staffName,
    };
    const init: RequestInit = { method, headers, cache: 'no-store', credentials: 'same-origin' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const controller = new AbortController();
    init.signal = controller.signal;
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    let status: number;
    let text: string;
    try {
      const response = await this.fetchFn(`${this.base}${path}`, init);
      status = response.status;
      text = await response.text();
    } catch {
      return failure(0, 'network');
    } finally {
      clearTimeout(timer);
    }
    const json = readJson(text);
    if (status < 200 || status > 299) return parseError(status, json);
    const value = parse(json);
    if (value === null) return failure(status, 'bad_response');
    return { ok: true, value };
  }
}
