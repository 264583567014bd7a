// The Dashboard section: four charts (patient messages per channel per day, cases that met or
// missed their claim deadline, the triage mix, time to first reply), each with the same figures
// as a table beside it, so the numbers can be read by anyone, with or without the chart.
// Charts are drawn by a ChartFactory (Chart.js in the page, a fake in tests).

import { format } from '../i18n';
import { DISPOSITIONS, type Channel, type Dashboard } from './api';
import { el, setAttr, setHidden, setText } from './dom';
import { channelLabel, dispositionLabel, formatMs, perDaySeries, type DashboardState } from './state';
import type { ConsoleStrings } from './strings';

export interface ChartSpec {
  kind: 'bar' | 'stacked-bar' | 'doughnut';
  labels: string[];
  series: { label: string; values: number[] }[];
  /** Axis unit for bar charts ("ms"), shown on the value axis. */
  unit?: string;
}

export interface ChartHandle {
  update(spec: ChartSpec): void;
  destroy(): void;
}

export type ChartFactory = (canvas: HTMLCanvasElement, spec: ChartSpec) => ChartHandle;

/** No charts (tables only): where no chart library is loaded. */
export const noCharts: ChartFactory = () => ({ update() {}, destroy() {} });

const KNOWN_CHANNELS: ReadonlySet<string> = new Set(['web', 'sms', 'voice', 'api']);

interface Panel {
  figure: HTMLElement;
  canvas: HTMLCanvasElement;
  table: HTMLTableSectionElement;
  chart: ChartHandle | null;
}

export class DashboardSection {
  readonly element: HTMLElement;
  private readonly heading: HTMLHeadingElement;
  private readonly status: HTMLParagraphElement;
  private readonly grid: HTMLDivElement;
  private readonly panels: Record<'messages' | 'escalations' | 'triage' | 'latency', Panel>;
  private shown: Dashboard | null = null;

  constructor(
    private readonly s: ConsoleStrings,
    private readonly charts: ChartFactory,
    private readonly now: () => number = () => Date.now(),
  ) {
    this.element = el('section', { id: 'section-dashboard', className: 'section' });
    this.element.setAttribute('aria-labelledby', 'dashboard-heading');
    this.heading = el('h2', { id: 'dashboard-heading' });
    this.status = el('p', { id: 'dashboard-status', className: 'list-status' });
    this.status.setAttribute('role', 'status');
    this.grid = el('div', { className: 'dashboard-grid' });
    this.panels = {
      messages: this.panel('chart-messages', s.chartMessages, s.columnDay),
      escalations: this.panel('chart-escalations', s.chartEscalations, s.chartEscalations),
      triage: this.panel('chart-triage', s.chartTriage, s.chartTriage),
      latency: this.panel('chart-latency', s.chartLatency, s.chartLatency),
    };
    this.element.append(this.heading, this.status, this.grid);
  }

  render(d: Readonly<DashboardState>): void {
    const s = this.s;
    setText(this.heading, format(s.dashboardHeading, { days: d.data?.days ?? d.days }));
    setText(this.status, d.data === null && d.loading ? s.dashboardLoading : '');
    setHidden(this.grid, d.data === null);
    if (d.data === this.shown) return;
    this.shown = d.data;
    if (d.data === null) return;
    const data = d.data;

    const perDay = perDaySeries(data, this.now());
    this.draw(
      'messages',
      {
        kind: 'stacked-bar',
        labels: perDay.labels,
        series: perDay.series.map((line) => ({ label: this.channel(line.channel), values: line.counts })),
      },
      [
        [s.columnDay, ...perDay.series.map((line) => this.channel(line.channel))],
        ...perDay.labels.map((day, i) => [day, ...perDay.series.map((line) => String(line.counts[i] ?? 0))]),
      ],
    );

    const e = data.escalations;
    this.draw(
      'escalations',
      {
        kind: 'doughnut',
        labels: [s.escalationsMet, s.escalationsMissed],
        series: [{ label: s.chartEscalations, values: [e.claimedInTime, e.missedDeadline] }],
      },
      [
        [s.escalationsTotal, String(e.total)],
        [s.escalationsMet, String(e.claimedInTime)],
        [s.escalationsMissed, String(e.missedDeadline)],
        [s.escalationsOpen, String(e.open)],
      ],
    );

    this.draw(
      'triage',
      {
        kind: 'doughnut',
        labels: DISPOSITIONS.map((k) => dispositionLabel(s, k)),
        series: [{ label: s.chartTriage, values: DISPOSITIONS.map((k) => data.triageMix[k]) }],
      },
      DISPOSITIONS.map((k) => [dispositionLabel(s, k), String(data.triageMix[k])]),
    );

    const l = data.latency;
    this.draw(
      'latency',
      {
        kind: 'bar',
        labels: [s.latencyP50, s.latencyP95],
        series: [{ label: s.chartLatency, values: [l.p50 ?? 0, l.p95 ?? 0] }],
        unit: 'ms',
      },
      [
        [s.latencyP50, formatMs(s, l.p50)],
        [s.latencyP95, formatMs(s, l.p95)],
        [s.latencySamples, String(l.samples)],
      ],
    );
  }

  clear(): void {
    this.shown = null;
    for (const panel of Object.values(this.panels)) {
      panel.chart?.destroy();
      panel.chart = null;
      panel.table.replaceChildren();
      setAttr(panel.figure, 'data-total', null);
    }
  }

  private channel(name: string): string {
    return KNOWN_CHANNELS.has(name) ? channelLabel(this.s, name as Channel) : name;
  }

  private panel(id: string, caption: string, firstColumn: string): Panel {
    const figure = el('figure', { id, className: 'chart' });
    const captionEl = el('figcaption', { className: 'chart-title', text: caption });
    const frame = el('div', { className: 'chart-frame' });
    const canvas = el('canvas');
    canvas.setAttribute('role', 'img');
    canvas.setAttribute('aria-label', caption);
    frame.append(canvas);
    const table = el('table', { className: 'data-table chart-table' });
    const tableCaption = el('caption', { className: 'visually-hidden', text: `${caption} (${firstColumn})` });
    const body = el('tbody');
    table.append(tableCaption, body);
    figure.append(captionEl, frame, table);
    this.grid.append(figure);
    return { figure, canvas, table: body, chart: null };
  }

  private draw(key: keyof DashboardSection['panels'], spec: ChartSpec, rows: string[][]): void {
    const panel = this.panels[key];
    const total = spec.series.reduce((n, line) => n + line.values.reduce((a, b) => a + b, 0), 0);
    setAttr(panel.figure, 'data-total', String(total));
    panel.table.replaceChildren(
      ...rows.map((cells, i) => {
        const tr = el('tr');
        cells.forEach((text, j) => {
          const cell = el(i === 0 && key === 'messages' ? 'th' : j === 0 ? 'th' : 'td', { text });
          if (cell instanceof HTMLTableCellElement && cell.tagName === 'TH') cell.scope = i === 0 && key === 'messages' ? 'col' : 'row';
          tr.append(cell);
        });
        return tr;
      }),
    );
    if (panel.chart === null) panel.chart = this.charts(panel.canvas, spec);
    else panel.chart.update(spec);
  }
}
