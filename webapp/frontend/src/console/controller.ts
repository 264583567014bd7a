// Drives the staff console: sign-in, polling the case list, loading the selected case, and the
// case actions. Talks to the server through a CaseApi-like object and to the page through a
// ConsoleViewPort, so tests can drive it with fakes.

import type { KeyValueStorage } from '../storage';
import type { ApiFailure, ApiResult, Case, CaseApi, CaseFilter, Credentials } from './api';
import { clearCredentials, loadCredentials, saveCredentials } from './session';
import {
  actionNotice,
  checkSignIn,
  deliveryNotice,
  errorText,
  initialState,
  permissions,
  selectedCase,
  withCase,
  type CaseAction,
  type ConsoleState,
} from './state';
import type { ConsoleStrings } from './strings';

export type FocusTarget = 'token' | 'staff-name' | 'list' | 'reply' | 'detail';

export interface ConsoleViewPort {
  render(state: Readonly<ConsoleState>): void;
  focus(target: FocusTarget): void;
}

export type CaseApiLike = Pick<CaseApi, 'listCases' | 'getCase' | 'claim' | 'handback' | 'resolve' | 'reply'>;

export interface ConsoleDeps {
  view: ConsoleViewPort;
  /** sessionStorage (or a stand-in): holds the token and staff name for this tab. */
  storage: KeyValueStorage;
  strings: ConsoleStrings;
  makeApi: (creds: Credentials) => CaseApiLike;
  now?: () => number;
  /** How often the list and the open case are refreshed. */
  pollMs?: number;
}

export const POLL_MS = 5000;

/** Where the last error came from: a refresh error clears on the next good refresh, an
 *  action's error stays until dismissed or the next action. */
type ErrorSource = 'refresh' | 'action' | 'signin';

export class ConsoleController {
  private state: ConsoleState;
  private api: CaseApiLike | null = null;
  private errorSource: ErrorSource | null = null;
  /** Reply drafts by case id, kept while switching cases (and across a re-sign-in). */
  private readonly drafts = new Map<string, string>();
  /** Bumped on sign-in/out: answers to requests from an older session are dropped. */
  private session = 0;
  /** Bumped when an action changes a case: refreshes started before it are stale. */
  private changes = 0;
  private refreshing: Promise<void> | null = null;
  private refreshAgain = false;
  private pollTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly now: () => number;
  private readonly pollMs: number;

  constructor(private readonly deps: ConsoleDeps) {
    this.now = deps.now ?? (() => Date.now());
    this.pollMs = deps.pollMs ?? POLL_MS;
    this.state = initialState(this.now());
  }

  /** The current state (for tests and debugging). */
  get snapshot(): Readonly<ConsoleState> {
    return this.state;
  }

  /** Resume a session saved in this tab, or show the sign-in form. */
  start(): void {
    const creds = loadCredentials(this.deps.storage);
    if (creds === null) {
      this.render();
      this.deps.view.focus('token');
      return;
    }
    this.enter(creds);
    void this.refresh();
  }

  async signIn(rawToken: string, rawName: string): Promise<void> {
    if (this.state.phase !== 'signin' || this.state.signingIn) return;
    const check = checkSignIn(this.deps.strings, rawToken, rawName);
    if (!check.ok) {
      this.setError(check.message, 'signin');
      this.render();
      this.deps.view.focus(check.field);
      return;
    }
    const session = ++this.session;
    const api = this.deps.makeApi(check.creds);
    this.state = { ...this.state, signingIn: true, nameDraft: check.creds.staffName };
    this.setError(null, null);
    this.render();
    // One list request checks the token before the console opens.
    const result = await api.listCases(this.state.filter);
    if (session !== this.session) return;
    this.state = { ...this.state, signingIn: false };
    if (!result.ok) {
      this.setError(errorText(this.deps.strings, result), 'signin');
      this.render();
      this.deps.view.focus('token');
      return;
    }
    saveCredentials(this.deps.storage, check.creds);
    this.enter(check.creds, api);
    this.state = {
      ...this.state,
      cases: result.value.cases,
      skippedCases: result.value.skipped,
      updatedAt: this.now(),
    };
    this.render();
    this.deps.view.focus('list');
    this.schedulePoll();
  }

  signOut(): void {
    clearCredentials(this.deps.storage);
    this.drafts.clear();
    this.leave('', null);
    this.deps.view.focus('token');
  }

  setFilter(filter: CaseFilter): void {
    if (this.state.phase !== 'console' || filter === this.state.filter) return;
    this.state = { ...this.state, filter, cases: null, skippedCases: 0 };
    this.render();
    void this.refresh();
  }

  select(id: string): void {
    if (this.state.phase !== 'console' || id === this.state.selectedId) return;
    this.state = { ...this.state, selectedId: id, detail: null };
    this.render();
    this.deps.view.focus('detail');
    void this.refresh();
  }

  replyInput(text: string): void {
    const id = this.state.selectedId;
    if (id === null) return;
    if (text === '') this.drafts.delete(id);
    else this.drafts.set(id, text);
    this.render();
  }

  claim(): Promise<void> {
    return this.act('claim');
  }

  handback(): Promise<void> {
    return this.act('handback');
  }

  resolve(): Promise<void> {
    return this.act('resolve');
  }

  async sendReply(): Promise<void> {
    const c = selectedCase(this.state);
    const api = this.api;
    if (c === null || api === null || !permissions(c, this.state.staffName, this.state.busy).reply) return;
    const text = (this.drafts.get(c.id) ?? '').trim();
    if (text === '') return;
    const session = this.session;
    this.state = { ...this.state, busy: 'reply', notice: null };
    this.clearActionError();
    this.render();
    const result = await api.reply(c.id, text);
    if (session !== this.session) return;
    this.state = { ...this.state, busy: null };
    if (result.ok) {
      this.changes++;
      // The box empties only when the server took the reply; on failure the text stays.
      this.drafts.delete(c.id);
      const detail = this.state.detail;
      const message = result.value.message;
      if (message && detail && detail.case.id === c.id && !detail.messages.some((m) => m.id === message.id)) {
        const messages = [...detail.messages, message].sort((a, b) => a.seq - b.seq);
        this.state = { ...this.state, detail: { ...detail, messages } };
      }
      this.state = { ...this.state, notice: deliveryNotice(this.deps.strings, result.value) };
    } else if (this.failed(result)) {
      return;
    }
    this.render();
    this.deps.view.focus('reply');
    void this.refresh();
  }

  dismissNotice(): void {
    this.state = { ...this.state, notice: null };
    this.render();
  }

  dismissError(): void {
    this.setError(null, null);
    this.render();
  }

  /**
   * Reload the list and the selected case now. A call while one is running makes it run once
   * more afterwards (with the then-current filter and selection). Schedules the next poll.
   */
  refresh(): Promise<void> {
    if (this.state.phase !== 'console' || this.api === null) return Promise.resolve();
    if (this.refreshing !== null) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.cancelPoll();
    this.refreshing = this.refreshLoop().finally(() => {
      this.refreshing = null;
      if (this.state.phase === 'console') this.schedulePoll();
    });
    return this.refreshing;
  }

  /** Stop the poll timer (the page is going away). */
  stop(): void {
    this.cancelPoll();
  }

  // ---- internals -------------------------------------------------------------------------

  private async refreshLoop(): Promise<void> {
    do {
      this.refreshAgain = false;
      const api = this.api;
      if (api === null) return;
      const session = this.session;
      const changes = this.changes;
      const { filter, selectedId } = this.state;
      const [list, detail] = await Promise.all([
        api.listCases(filter),
        selectedId !== null ? api.getCase(selectedId) : Promise.resolve(null),
      ]);
      // Signed out (or in again) meanwhile: drop these; loop only if the new session asked.
      if (session !== this.session) continue;
      if (changes !== this.changes) {
        // A claim/reply/… finished meanwhile: these answers may predate it.
        this.refreshAgain = true;
        continue;
      }
      if ((!list.ok && list.status === 401) || (detail && !detail.ok && detail.status === 401)) {
        this.unauthorized();
        return;
      }
      let failure: ApiFailure | null = null;
      if (list.ok) {
        if (filter === this.state.filter) {
          this.state = {
            ...this.state,
            cases: list.value.cases,
            skippedCases: list.value.skipped,
            updatedAt: this.now(),
          };
        }
      } else {
        failure = list;
      }
      if (detail !== null && selectedId === this.state.selectedId) {
        if (detail.ok) this.state = { ...this.state, detail: detail.value };
        else failure ??= detail;
      }
      if (failure !== null) {
        if (this.errorSource !== 'action') this.setError(errorText(this.deps.strings, failure), 'refresh');
      } else if (this.errorSource === 'refresh') {
        this.setError(null, null);
      }
      this.render();
    } while (this.refreshAgain && this.state.phase === 'console');
  }

  private async act(action: CaseAction): Promise<void> {
    const c = selectedCase(this.state);
    const api = this.api;
    if (c === null || api === null || !permissions(c, this.state.staffName, this.state.busy)[action]) return;
    const session = this.session;
    this.state = { ...this.state, busy: action, notice: null };
    this.clearActionError();
    this.render();
    const result: ApiResult<Case> = await api[action](c.id);
    if (session !== this.session) return;
    this.state = { ...this.state, busy: null };
    if (result.ok) {
      this.changes++;
      const fresh = result.value;
      const detail = this.state.detail;
      this.state = {
        ...this.state,
        cases: withCase(this.state.cases, fresh, this.state.filter),
        detail: detail && detail.case.id === fresh.id ? { ...detail, case: fresh } : detail,
        notice: actionNotice(this.deps.strings, action),
      };
    } else if (this.failed(result)) {
      return;
    }
    this.render();
    if (action === 'claim' && result.ok) this.deps.view.focus('reply');
    void this.refresh();
  }

  /** Handles a failed action; true when it signed the staff member out (401). */
  private failed(result: ApiFailure): boolean {
    if (result.status === 401) {
      this.unauthorized();
      return true;
    }
    this.setError(errorText(this.deps.strings, result), 'action');
    return false;
  }

  private enter(creds: Credentials, api: CaseApiLike = this.deps.makeApi(creds)): void {
    this.api = api;
    this.state = {
      ...initialState(this.now()),
      phase: 'console',
      staffName: creds.staffName,
      nameDraft: creds.staffName,
    };
    this.setError(null, null);
    this.render();
  }

  /** Back to the sign-in form (sign-out, or the token was refused). */
  private leave(nameDraft: string, error: string | null): void {
    this.session++;
    this.api = null;
    this.cancelPoll();
    this.refreshAgain = false;
    this.state = { ...initialState(this.now()), nameDraft };
    this.setError(error, error === null ? null : 'signin');
    this.render();
  }

  private unauthorized(): void {
    clearCredentials(this.deps.storage);
    this.leave(this.state.staffName, this.deps.strings.errUnauthorized);
    this.deps.view.focus('token');
  }

  private setError(text: string | null, source: ErrorSource | null): void {
    this.errorSource = text === null ? null : source;
    this.state = { ...this.state, error: text };
  }

  private clearActionError(): void {
    if (this.errorSource === 'action') this.setError(null, null);
  }

  private schedulePoll(): void {
    this.cancelPoll();
    this.pollTimer = setTimeout(() => {
      this.pollTimer = null;
      void this.refresh();
    }, this.pollMs);
  }

  private cancelPoll(): void {
    if (this.pollTimer !== null) clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }

  private render(): void {
    const id = this.state.selectedId;
    this.state = {
      ...this.state,
      now: this.now(),
      replyDraft: id !== null ? (this.drafts.get(id) ?? '') : '',
    };
    this.deps.view.render(this.state);
  }
}
