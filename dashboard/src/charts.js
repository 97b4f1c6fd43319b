// Live training charts (uPlot). MetricStore accumulates the job's reports
// (GET api/jobs/{id}/metrics?since=N); MetricChart draws one group of keys
// (loss, accuracy, throughput, ...) against epoch/step, one line per rank and
// key, or per key averaged over the ranks.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { h, clear, fmtNumber } from './util.js';

// Keys that describe a report rather than measure the model.
const RESERVED = new Set(['rank', 'time', 'attempt', 'epoch', 'epochs', 'step', 'steps', 'total_steps', 'world_size']);

export const GROUPS = [
  { id: 'loss', title: 'Loss', match: (k) => /loss/i.test(k) },
  { id: 'accuracy', title: 'Accuracy', match: (k) => /acc/i.test(k) },
  { id: 'throughput', title: 'Samples/s', match: (k) => /per_sec|per_s$|throughput|samples_s/i.test(k) },
  { id: 'other', title: 'Other metrics', match: () => true },
];

export function groupOf(key) {
  return GROUPS.find((g) => g.match(key)).id;
}

const INTEGER_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 1e7, 1e8];
const RANK_COLORS = ['#2563eb', '#ea580c', '#16a34a', '#9333ea', '#dc2626', '#0891b2', '#ca8a04', '#db2777'];
const KEY_DASH = [[], [6, 4], [2, 3], [10, 3, 2, 3]];

export class MetricStore {
  constructor() {
    this.rows = [];
    this.next = 0;
    // key -> rank -> Map(xValue -> value) for each x axis kind
    this.keys = new Set();
    this.ranks = new Set();
    this.t0 = null;
  }

  add(rows) {
    for (const r of rows) {
      if (!r || typeof r !== 'object') continue;
      this.rows.push(r);
      const rank = Number.isInteger(r.rank) ? r.rank : 0;
      this.ranks.add(rank);
      if (typeof r.time === 'number' && (this.t0 === null || r.time < this.t0)) this.t0 = r.time;
      for (const [k, v] of Object.entries(r)) {
        if (!RESERVED.has(k) && typeof v === 'number' && isFinite(v)) this.keys.add(k);
      }
    }
  }

  // The x axes the reports allow, best first.
  axes() {
    const out = [];
    if (this.rows.some((r) => typeof r.step === 'number')) out.push('step');
    if (this.rows.some((r) => typeof r.epoch === 'number')) out.push('epoch');
    out.push('time');
    return out;
  }

  // The last report of each rank.
  latestByRank() {
    const m = new Map();
    for (const r of this.rows) m.set(Number.isInteger(r.rank) ? r.rank : 0, r);
    return m;
  }

  // {xs, series: [{label, values, rank, key}]} for the keys of one group.
  // A later report for the same (key, rank, x) replaces an earlier one (a
  // restarted group re-reports the epochs after its checkpoint).
  series(keys, axis, mode) {
    const per = new Map(); // key -> rank -> Map(x -> value)
    for (const r of this.rows) {
      let x;
      if (axis === 'time') x = typeof r.time === 'number' ? Math.round((r.time - this.t0) * 10) / 10 : undefined;
      else x = r[axis];
      if (typeof x !== 'number') continue;
      const rank = Number.isInteger(r.rank) ? r.rank : 0;
      for (const k of keys) {
        const v = r[k];
        if (typeof v !== 'number' || !isFinite(v)) continue;
        if (!per.has(k)) per.set(k, new Map());
        const byRank = per.get(k);
        if (!byRank.has(rank)) byRank.set(rank, new Map());
        byRank.get(rank).set(x, v);
      }
    }
    const xsSet = new Set();
    for (const byRank of per.values()) for (const pts of byRank.values()) for (const x of pts.keys()) xsSet.add(x);
    const xs = [...xsSet].sort((a, b) => a - b);
    const series = [];
    const keyList = keys.filter((k) => per.has(k));
    keyList.forEach((k, ki) => {
      const byRank = per.get(k);
      const ranks = [...byRank.keys()].sort((a, b) => a - b);
      if (mode === 'mean') {
        const values = xs.map((x) => {
          let sum = 0;
          let n = 0;
          for (const rk of ranks) {
            const v = byRank.get(rk).get(x);
            if (v !== undefined) {
              sum += v;
              n++;
            }
          }
          return n ? sum / n : null;
        });
        const label = ranks.length > 1 ? `${k} (mean of ${ranks.length})` : k;
        series.push({ label, key: k, values, color: RANK_COLORS[ki % RANK_COLORS.length], dash: [] });
      } else {
        for (const rk of ranks) {
          const pts = byRank.get(rk);
          series.push({
            label: `${k} · rank ${rk}`,
            key: k,
            rank: rk,
            values: xs.map((x) => (pts.has(x) ? pts.get(x) : null)),
            color: RANK_COLORS[rk % RANK_COLORS.length],
            dash: KEY_DASH[ki % KEY_DASH.length],
          });
        }
      }
    });
    return { xs, series };
  }
}

export class MetricChart {
  constructor(title) {
    this.title = title;
    this.plot = null;
    this.signature = '';
    this.body = h('div', { class: 'chart-body' });
    this.empty = h('div', { class: 'chart-empty' }, 'Waiting for the first report…');
    this.el = h('div', { class: 'chart card' }, h('h3', {}, title), this.body);
    this.body.append(this.empty);
    this.resize = new ResizeObserver(() => {
      if (this.plot) this.plot.setSize(this.size());
    });
    this.resize.observe(this.body);
  }

  size() {
    return { width: Math.max(240, this.body.clientWidth), height: 220 };
  }

  // data: the result of MetricStore.series(); axis: the x label.
  update(data, axis) {
    if (!data.series.length || !data.xs.length) return;
    const signature = axis + '|' + data.series.map((s) => s.label).join('|');
    const aligned = [data.xs, ...data.series.map((s) => s.values)];
    if (this.plot && signature === this.signature) {
      this.plot.setData(aligned);
      this.showLatest();
      return;
    }
    if (this.plot) this.plot.destroy();
    clear(this.body);
    this.signature = signature;
    const opts = {
      ...this.size(),
      scales: { x: { time: false } },
      axes: [
        {
          label: axis === 'time' ? 'seconds since the first report' : axis,
          stroke: '#475569',
          grid: { stroke: '#e2e8f0' },
          // Epochs and steps are whole numbers: no 1.5 ticks.
          ...(axis === 'time' ? {} : { incrs: INTEGER_INCRS, values: (u, vals) => vals.map((v) => String(v)) }),
        },
        { stroke: '#475569', grid: { stroke: '#e2e8f0' }, size: 60 },
      ],
      series: [
        { label: axis },
        ...data.series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          dash: s.dash,
          spanGaps: true,
          points: { show: true, size: 5 },
          value: (u, v) => (v === null || v === undefined ? '—' : fmtNumber(v)),
        })),
      ],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      hooks: {
        // Away from the cursor, the legend shows the latest values.
        setCursor: [(u) => {
          if (u.cursor.idx === null || u.cursor.idx === undefined) this.showLatest();
        }],
      },
    };
    this.plot = new uPlot(opts, aligned, this.body);
    this.showLatest();
  }

  showLatest() {
    const u = this.plot;
    if (!u || !u.data[0].length) return;
    if (u.cursor.idx !== null && u.cursor.idx !== undefined) return;
    u.setLegend({ idx: u.data[0].length - 1 }, false);
  }

  // How many x values the chart holds, and the points of its first series
  // (for tests: window.__cohort.chartPoints()).
  points() {
    if (!this.plot) return { xs: 0, first: 0 };
    const d = this.plot.data;
    return { xs: d[0].length, first: d.length > 1 ? d[1].filter((v) => v !== null && v !== undefined).length : 0 };
  }

  destroy() {
    this.resize.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}
