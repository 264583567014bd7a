// Drives the staff console: sign-in, polling the case list, loading the selected case, the
// case actions, and the other sections (conversations, knowledge base, dashboard, audit log).
// Talks to the server through a ConsoleApi-like object and to the page through a
// ConsoleViewPort, so tests can drive it with fakes.

import type { KeyValueStorage } from '../storage';
import type { ApiFailure, ApiResult, Case, CaseFilter, ConsoleApi, Credentials } from './api';
import { clearCredentials, loadCredentials, saveCredentials } from './session';
import {
  actionNotice,
  canUpload,
  checkSignIn,
  deliveryNotice,
  errorText,
  initialState,
  permissions,
  selectedCase,
  signInErrorText,
  tabsFor,
  withCase,
  type CaseAction,
  type ConsoleState,
  type Tab,
} from './state';
import type { ConsoleStrings } from './strings';

export type FocusTarget = 'username' | 'password' | 'list' | 'reply' | 'detail' | 'tab' | 'transcript';

export interface ConsoleViewPort {
  render(state: Readonly<ConsoleState>): void;
  focus(target: FocusTarget): void;
}

export type ConsoleApiLike = Pick<
  ConsoleApi,
  | 'listCases'
  | 'getCase'
  | 'claim'
  | 'handback'
  | 'resolve'
  | 'reply'
  | 'logout'
  | 'listConversations'
  | 'transcript'
  | 'kbJobs'
  | 'uploadDocument'
  | 'dashboard'
  | 'audit'
  | 'verifyAudit'
>;
/** The older name, for the case part of the API. */
export type CaseApiLike = ConsoleApiLike;

export interface ConsoleDeps {
  view: ConsoleViewPort;
  /** sessionStorage (or a stand-in): holds the session token for this tab. */
  storage: KeyValueStorage;
  strings: ConsoleStrings;
  login: (username: string, password: string) => Promise<ApiResult<Credentials>>;
  makeApi: (creds: Credentials) => ConsoleApiLike;
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
  private api: ConsoleApiLike | null = null;
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
    const creds = loadCredentials(this.deps.storage, this.now());
    if (creds === null) {
      clearCredentials(this.deps.storage);
      this.render();
      this.deps.view.focus('username');
      return;
    }
    this.enter(creds);
    void this.refresh();
  }

  async signIn(rawUsername: string, password: string): Promise<void> {
    if (this.state.phase !== 'signin' || this.state.signingIn) return;
    const check = checkSignIn(this.deps.strings, rawUsername, password);
    if (!check.ok) {
      this.setError(check.message, 'signin');
      this.render();
      this.deps.view.focus(check.field);
      return;
    }
    const session = ++this.session;
    this.state = { ...this.state, signingIn: true, nameDraft: check.username };
    this.setError(null, null);
    this.render();
    const login = await this.deps.login(check.username, check.password);
    if (session !== this.session) return;
    if (!login.ok) {
      this.state = { ...this.state, signingIn: false };
      this.setError(signInErrorText(this.deps.strings, login), 'signin');
      this.render();
      this.deps.view.focus('password');
      return;
    }
    const creds = login.value;
    const api = this.deps.makeApi(creds);
    // The case list opens the console: one request confirms the new session works.
    const result = await api.listCases(this.state.filter);
    if (session !== this.session) return;
    this.state = { ...this.state, signingIn: false };
    if (!result.ok) {
      this.setError(errorText(this.deps.strings, result), 'signin');
      this.render();
      this.deps.view.focus('password');
      return;
    }
    saveCredentials(this.deps.storage, creds);
    this.enter(creds, api);
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

  /** Ends the session here at once, and on the server (which ends all of this user's). */
  signOut(): void {
    const api = this.api;
    clearCredentials(this.deps.storage);
    this.drafts.clear();
    this.leave('', null);
    this.deps.view.focus('username');
    if (api !== null) void api.logout();
  }

  showTab(tab: Tab): void {
    if (this.state.phase !== 'console' || !tabsFor(this.state.user?.role).includes(tab)) return;
    if (tab === this.state.tab) return;
    this.state = { ...this.state, tab };
    this.render();
    this.deps.view.focus('tab');
    void this.loadTab(tab);
  }

  /** Reload what the current section shows. */
  reloadTab(): Promise<void> {
    if (this.state.phase !== 'console') return Promise.resolve();
    return this.state.tab === 'cases' ? this.refresh() : this.loadTab(this.state.tab);
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
    if (c === null || api === null || !this.allowed(c).reply) return;
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

  // ---- conversations ---------------------------------------------------------------------

  /** Open a conversation's transcript (the server records the read in the audit log). */
  async openConversation(id: string): Promise<void> {
    const api = this.api;
    if (api === null || this.state.conversations.selectedId === id) return;
    const session = this.session;
    this.patchConversations({ selectedId: id, transcript: null });
    this.render();
    this.deps.view.focus('transcript');
    const result = await api.transcript(id);
    if (session !== this.session || this.state.conversations.selectedId !== id) return;
    if (result.ok) this.patchConversations({ transcript: result.value });
    else if (this.failed(result)) return;
    this.render();
  }

  async moreConversations(): Promise<void> {
    const { nextBefore, loading } = this.state.conversations;
    if (nextBefore === null || loading) return;
    await this.loadConversations(nextBefore);
  }

  // ---- knowledge base --------------------------------------------------------------------

  async upload(file: Blob | null, filename: string, language: string | null): Promise<void> {
    const api = this.api;
    if (api === null || !canUpload(this.state.user?.role) || this.state.kb.uploading) return;
    if (file === null) {
      this.setError(this.deps.strings.kbChooseFile, 'action');
      this.render();
      return;
    }
    const session = this.session;
    this.state = { ...this.state, kb: { ...this.state.kb, uploading: true }, notice: null };
    this.clearActionError();
    this.render();
    const result = await api.uploadDocument(file, filename, language);
    if (session !== this.session) return;
    this.state = { ...this.state, kb: { ...this.state.kb, uploading: false } };
    if (result.ok) {
      const text = this.deps.strings.kbUploaded.replace('{name}', result.value.filename);
      this.state = { ...this.state, notice: { text, tone: 'info' } };
      this.render();
      await this.loadTab('kb');
      return;
    }
    if (!this.failed(result)) this.render();
  }

  // ---- audit -----------------------------------------------------------------------------

  async verifyAudit(): Promise<void> {
    const api = this.api;
    if (api === null || this.state.audit.verifying) return;
    const session = this.session;
    this.patchAudit({ verifying: true, verdict: null });
    this.render();
    const result = await api.verifyAudit();
    if (session !== this.session) return;
    this.patchAudit({ verifying: false });
    if (result.ok) this.patchAudit({ verdict: result.value });
    else if (result.status === 404) this.patchAudit({ unavailable: true });
    else if (this.failed(result)) return;
    this.render();
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

  private allowed(c: Case | null): ReturnType<typeof permissions> {
    return permissions(c, this.state.staffName, this.state.busy, this.state.user?.role);
  }

  private async loadTab(tab: Tab): Promise<void> {
    switch (tab) {
      case 'cases':
        return this.refresh();
      case 'conversations':
        return this.loadConversations(null);
      case 'kb':
        return this.load(
          (api) => api.kbJobs(),
          (value) => ({ kb: { ...this.state.kb, jobs: value.items, skipped: value.skipped } }),
        );
      case 'dashboard':
        this.state = { ...this.state, dashboard: { ...this.state.dashboard, loading: true } };
        return this.load(
          (api) => api.dashboard(this.state.dashboard.days),
          (value) => ({ dashboard: { ...this.state.dashboard, data: value, loading: false } }),
          () => ({ dashboard: { ...this.state.dashboard, loading: false } }),
        );
      case 'audit':
        this.patchAudit({ loading: true });
        return this.load(
          (api) => api.audit(null),
          (value) => ({ audit: { ...this.state.audit, page: value, loading: false, unavailable: false } }),
          (f) => ({ audit: { ...this.state.audit, loading: false, unavailable: f.status === 404 } }),
          // Built by another part of the platform: a server without it answers 404.
          (f) => f.status === 404,
        );
    }
  }

  private async loadConversations(before: string | null): Promise<void> {
    this.patchConversations({ loading: true });
    await this.load(
      (api) => api.listConversations(before),
      (page) => {
        const earlier = before === null ? [] : (this.state.conversations.items ?? []);
        const seen = new Set(earlier.map((c) => c.id));
        const items = [...earlier, ...page.conversations.filter((c) => !seen.has(c.id))];
        return {
          conversations: {
            ...this.state.conversations,
            items,
            skipped: (before === null ? 0 : this.state.conversations.skipped) + page.skipped,
            nextBefore: page.nextBefore,
            loading: false,
          },
        };
      },
      () => ({ conversations: { ...this.state.conversations, loading: false } }),
    );
  }

  /** One section request: the answer lands only if the session is still the same. */
  private async load<T>(
    request: (api: ConsoleApiLike) => Promise<ApiResult<T>>,
    onOk: (value: T) => Partial<ConsoleState>,
    onFail?: (f: ApiFailure) => Partial<ConsoleState>,
    quiet?: (f: ApiFailure) => boolean,
  ): Promise<void> {
    const api = this.api;
    if (api === null) return;
    const session = this.session;
    this.render();
    const result = await request(api);
    if (session !== this.session) return;
    if (result.ok) {
      this.state = { ...this.state, ...onOk(result.value) };
      if (this.errorSource === 'refresh') this.setError(null, null);
    } else {
      if (onFail) this.state = { ...this.state, ...onFail(result) };
      if (result.status === 401) {
        this.unauthorized();
        return;
      }
      if (!quiet?.(result)) this.setError(errorText(this.deps.strings, result), 'refresh');
    }
    this.render();
  }

  private patchConversations(patch: Partial<ConsoleState['conversations']>): void {
    this.state = { ...this.state, conversations: { ...this.state.conversations, ...patch } };
  }

  private patchAudit(patch: Partial<ConsoleState['audit']>): void {
    this.state = { ...this.state, audit: { ...this.state.audit, ...patch } };
  }

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
    if (c === null || api === null || !this.allowed(c)[action]) return;
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
    const text = result.status === 403 ? this.deps.strings.errForbidden : errorText(this.deps.strings, result);
    this.setError(text, 'action');
    return false;
  }

  private enter(creds: Credentials, api: ConsoleApiLike = this.deps.makeApi(creds)): void {
    this.api = api;
    const user = { username: creds.username, displayName: creds.displayName, role: creds.role };
    this.state = {
      ...initialState(this.now()),
      phase: 'console',
      user,
      staffName: creds.displayName,
      nameDraft: creds.username,
    };
    this.setError(null, null);
    this.render();
  }

  /** Back to the sign-in form (sign-out, or the session was refused). */
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
    this.leave(this.state.user?.username ?? '', this.deps.strings.errUnauthorized);
    this.deps.view.focus('password');
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
