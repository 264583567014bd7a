// Chart.js behind the dashboard's small ChartFactory seam. Only the parts the dashboard uses
// are registered (a smaller bundle). Chart.js draws on canvas and sets styles through the
// CSSOM, which the page's Content-Security-Policy (no inline styles or scripts) allows.

import {
  ArcElement,
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  DoughnutController,
  Legend,
  LinearScale,
  Tooltip,
  type ChartConfiguration,
} from 'chart.js';
import type { ChartFactory, ChartSpec } from './dashboardView';

Chart.register(ArcElement, BarController, BarElement, CategoryScale, DoughnutController, Legend, LinearScale, Tooltip);

// Distinguishable in light and dark schemes, and for the common colour-vision deficiencies.
const PALETTE = ['#0f5c8c', '#d9822b', '#2a9d8f', '#8e5ea2', '#c0392b', '#6b7280'];

function config(spec: ChartSpec): ChartConfiguration<'bar' | 'doughnut'> {
  const doughnut = spec.kind === 'doughnut';
  const datasets = spec.series.map((line, i) => ({
    label: line.label,
    data: line.values,
    backgroundColor: doughnut ? spec.labels.map((_, j) => PALETTE[j % PALETTE.length]!) : PALETTE[i % PALETTE.length]!,
    borderWidth: doughnut ? 1 : 0,
  }));
  return {
    type: doughnut ? 'doughnut' : 'bar',
    data: { labels: spec.labels, datasets },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      // Figures change every few minutes at most: animating them only costs CPU.
      animation: false,
      plugins: { legend: { display: doughnut || spec.series.length > 1, position: 'bottom' } },
      scales: doughnut
        ? {}
        : {
            x: { stacked: spec.kind === 'stacked-bar' },
            y: {
              stacked: spec.kind === 'stacked-bar',
              beginAtZero: true,
              ticks: { precision: 0 },
              title: { display: spec.unit !== undefined, text: spec.unit ?? '' },
            },
          },
    },
  } as ChartConfiguration<'bar' | 'doughnut'>;
}

export const chartJs: ChartFactory = (canvas, spec) => {
  let chart = new Chart(canvas, config(spec));
  let kind = spec.kind;
  return {
    update(next) {
      if (next.kind !== kind) {
        chart.destroy();
        chart = new Chart(canvas, config(next));
        kind = next.kind;
        return;
      }
      chart.data = config(next).data;
      chart.update();
    },
    destroy() {
      chart.destroy();
    },
  };
};
