// The Knowledge base section: uploaded documents and their ingestion, and (for admins) the
// upload form. The server ingests in the background; the list shows how each job went.

import { format } from '../i18n';
import type { KbJob } from './api';
import { button, clean, el, setDisabled, setHidden, setText, setTime } from './dom';
import type { KbState } from './state';
import type { ConsoleStrings } from './strings';

export interface KbActions {
  upload(file: Blob | null, filename: string, language: string | null): void;
  reloadTab(): void;
}

export class KbSection {
  readonly element: HTMLElement;
  private readonly status: HTMLParagraphElement;
  private readonly body: HTMLTableSectionElement;
  private readonly form: HTMLFormElement;
  private readonly file: HTMLInputElement;
  private readonly language: HTMLSelectElement;
  private readonly submit: HTMLButtonElement;
  private shown: readonly KbJob[] | null = null;

  constructor(
    private readonly s: ConsoleStrings,
    private readonly actions: KbActions,
  ) {
    this.element = el('section', { id: 'section-kb', className: 'section' });
    this.element.setAttribute('aria-labelledby', 'kb-heading');
    const heading = el('h2', { id: 'kb-heading', text: s.kbHeading });

    this.form = el('form', { id: 'kb-upload', className: 'kb-upload' });
    this.form.noValidate = true;
    const formHeading = el('h3', { text: s.kbUploadHeading });
    const fileLabel = el('label', { text: s.kbFileLabel });
    fileLabel.htmlFor = 'kb-file';
    this.file = el('input', { id: 'kb-file', className: 'input' });
    this.file.type = 'file';
    this.file.accept = '.md,.markdown,.html,.htm,.pdf,.txt';
    const languageLabel = el('label', { text: s.kbLanguageLabel });
    languageLabel.htmlFor = 'kb-language';
    this.language = el('select', { id: 'kb-language', className: 'input' });
    for (const [value, text] of [
      ['', s.kbLanguageAuto],
      ['en', s.kbLanguageEn],
      ['es', s.kbLanguageEs],
    ] as const) {
      const option = el('option', { text });
      option.value = value;
      this.language.append(option);
    }
    this.submit = el('button', { id: 'kb-submit', className: 'button button--primary', text: s.kbUpload });
    this.submit.type = 'submit';
    this.form.append(formHeading, fileLabel, this.file, languageLabel, this.language, this.submit);
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      const chosen = this.file.files?.[0] ?? null;
      this.actions.upload(chosen, chosen?.name ?? '', this.language.value === '' ? null : this.language.value);
    });

    const toolbar = el('div', { className: 'list-toolbar' });
    const refresh = button('kb-refresh', s.refresh, 'button button--quiet');
    refresh.addEventListener('click', () => this.actions.reloadTab());
    toolbar.append(refresh);
    this.status = el('p', { id: 'kb-status', className: 'list-status' });
    this.status.setAttribute('role', 'status');
    const table = el('table', { id: 'kb-jobs', className: 'data-table' });
    const head = el('thead');
    const headRow = el('tr');
    for (const text of [s.kbColFile, s.kbColStatus, s.kbColSize, s.kbColUploaded, s.kbColError]) {
      const th = el('th', { text });
      th.scope = 'col';
      headRow.append(th);
    }
    head.append(headRow);
    this.body = el('tbody');
    table.append(head, this.body);
    this.element.append(heading, this.form, toolbar, this.status, table);
  }

  render(kb: Readonly<KbState>, mayUpload: boolean): void {
    const s = this.s;
    setHidden(this.form, !mayUpload);
    setDisabled(this.submit, kb.uploading);
    setText(this.submit, kb.uploading ? s.kbUploading : s.kbUpload);
    const status = kb.jobs === null ? s.kbLoading : kb.jobs.length === 0 ? s.kbEmpty : '';
    setText(this.status, status);
    if (kb.jobs !== this.shown) {
      if (kb.jobs !== null && this.shown !== null && kb.jobs.length > this.shown.length) this.form.reset();
      this.shown = kb.jobs;
      this.body.replaceChildren(...(kb.jobs ?? []).map((job) => this.row(job)));
    }
  }

  clear(): void {
    this.shown = null;
    this.body.replaceChildren();
    this.form.reset();
  }

  private row(job: KbJob): HTMLTableRowElement {
    const row = el('tr');
    row.dataset.jobId = job.id;
    row.dataset.status = job.status;
    const uploaded = el('time');
    setTime(uploaded, job.created_at, this.s.none);
    const when = el('td');
    when.append(uploaded);
    row.append(
      el('td', { text: clean(job.filename) }),
      el('td', { text: clean(job.status) }),
      el('td', { text: format(this.s.kbSize, { n: Math.max(1, Math.round(job.size_bytes / 1024)) }) }),
      when,
      el('td', { text: job.error !== null ? clean(job.error) : '' }),
    );
    return row;
  }
}
