// cohort dashboard: Overview (nodes, pending demand, events), Jobs (table,
// filter, stop/delete) and a job's page (#/jobs/<id>: workers, live charts of
// the reported metrics, live log tail, results). Hash routing; every view
// returns a dispose() that stops its timers and sockets.
import './app.css';
import {
  api, loadAuthMode, authRequired, hasToken, signIn, forgetToken, setUnauthorizedHandler, Unauthorized,
} from './api.js';
import { MetricStore, MetricChart, GROUPS, groupOf } from './charts.js';
import { LogView } from './logs.js';
import {
  h, clear, badge, fmtDateTime, fmtTime, fmtDuration, fmtAgo, fmtBytes, fmtNumber, shortId, jobLink,
  TERMINAL, STATUSES,
} from './util.js';

const app = document.getElementById('app');
const loginBox = document.getElementById('login');
const loginForm = document.getElementById('login-form');
const loginInput = document.getElementById('login-token');
const loginError = document.getElementById('login-error');
const signOutButton = document.getElementById('sign-out');
const liveDot = document.getElementById('live-dot');

let dispose = () => {};
let started = false;

// For tests and curious users: the current view's charts and log.
window.__cohort = { charts: {}, log: null, metrics: null };

// ---------------------------------------------------------------- auth ----

function showLogin(message) {
  dispose();
  dispose = () => {};
  clear(app);
  started = false;
  document.body.classList.add('locked');
  loginBox.hidden = false;
  loginError.textContent = message || '';
  loginInput.value = '';
  loginInput.focus();
}

setUnauthorizedHandler(() => {
  forgetToken();
  showLogin('The head refused the token (401). Enter the current one.');
});

loginForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const t = loginInput.value.trim();
  if (!t) return;
  loginError.textContent = '';
  try {
    if (await signIn(t)) {
      loginBox.hidden = true;
      start();
    } else {
      loginError.textContent = 'That token was refused (401).';
    }
  } catch (err) {
    loginError.textContent = 'Cannot reach the head: ' + err.message;
  }
});

signOutButton.addEventListener('click', () => {
  forgetToken();
  showLogin('');
});

function start() {
  document.body.classList.remove('locked');
  signOutButton.hidden = !authRequired();
  started = true;
  route();
}

// ---------------------------------------------------------------- router --

function route() {
  if (!started) return;
  dispose();
  dispose = () => {};
  clear(app);
  window.__cohort.charts = {};
  window.__cohort.log = null;
  const hash = location.hash.replace(/^#/, '') || '/';
  const m = /^\/jobs\/(.+)$/.exec(hash);
  let view;
  if (m) view = jobView(decodeURIComponent(m[1]));
  else if (hash === '/jobs') view = jobsView();
  else view = overviewView();
  for (const a of document.querySelectorAll('nav a')) {
    const target = a.getAttribute('href').slice(1);
    a.classList.toggle('active', target === '/' ? hash === '/' : hash.startsWith(target));
  }
  dispose = view;
}

window.addEventListener('hashchange', route);

// Calls fn now and then every `ms` (after the previous call finished).
function every(ms, fn) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    try {
      await fn();
      liveDot.className = 'live-dot ok';
      liveDot.title = 'connected';
    } catch (e) {
      if (e instanceof Unauthorized) return;
      liveDot.className = 'live-dot err';
      liveDot.title = 'cannot reach the head: ' + e.message;
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...children);
}

function table(headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted empty' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', {}, h('thead', {}, h('tr', {}, headers.map((x) => h('th', {}, x)))), h('tbody', {}, rows)));
}

// ---------------------------------------------------------------- overview

function resourceCell(total, used, key, fmt = (v) => fmtNumber(v)) {
  const t = total?.[key] || 0;
  const u = used?.[key] || 0;
  if (!t && !u) return h('td', { class: 'muted' }, '—');
  const pct = t ? Math.min(100, (u / t) * 100) : 0;
  return h('td', {},
    h('div', { class: 'usage' },
      h('span', {}, `${fmt(u)} / ${fmt(t)}`),
      h('div', { class: 'bar' }, h('div', { class: 'bar-fill' + (pct >= 100 ? ' full' : ''), style: { width: `${pct}%` } }))));
}

// GPUs: scheduled against the total (as the other resources), then what the
// node's agent samples: the models, and each GPU's utilization and memory
// when the driver reports them (NVML).
function gpuCell(n) {
  const gpus = n.gpus || [];
  const cell = resourceCell(n.resources_total, n.resources_used, 'GPU');
  if (!gpus.length) return cell;
  if (cell.classList.contains('muted')) clear(cell).classList.remove('muted');
  const models = new Map();
  for (const g of gpus) models.set(g.name || 'GPU', (models.get(g.name || 'GPU') || 0) + 1);
  cell.append(h('div', { class: 'muted small' }, [...models].map(([m, c]) => `${c} × ${m}`).join(', ')));
  for (const g of gpus) {
    const parts = [];
    if (g.utilization_percent != null) parts.push(`${Math.round(g.utilization_percent)}%`);
    if (g.memory_used_bytes != null && g.memory_total_bytes != null)
      parts.push(`${fmtBytes(g.memory_used_bytes)} / ${fmtBytes(g.memory_total_bytes)}`);
    if (parts.length) cell.append(h('div', { class: 'small mono gpu-line', title: g.name || '' }, `${g.index}: ${parts.join(' · ')}`));
  }
  return cell;
}

function overviewView() {
  const cards = h('div', { class: 'stats' });
  const nodesBox = h('div');
  const pendingBox = h('div');
  const eventsList = h('ol', { class: 'events' });
  const eventsEmpty = h('p', { class: 'muted empty' }, 'No events yet.');
  const jobsBox = h('div');
  app.append(
    h('h1', {}, 'Cluster'),
    cards,
    section('Nodes', nodesBox),
    h('section', { class: 'card' },
      h('div', { class: 'section-head' }, h('h2', {}, 'Recent jobs'), h('a', { href: '#/jobs' }, 'All jobs →')),
      jobsBox),
    section('Pending demand', pendingBox),
    section('Events', eventsEmpty, eventsList));

  const stopStatus = every(2000, async () => {
    const [status, jobs] = await Promise.all([api('api/cluster/status'), api('api/jobs/')]);
    const nodes = status.nodes || [];
    const alive = nodes.filter((n) => n.state === 'ALIVE');
    const sum = (key, field) => alive.reduce((a, n) => a + (n[field]?.[key] || 0), 0);
    const count = (s) => jobs.filter((j) => j.status === s).length;
    const stat = (label, value, sub) => h('div', { class: 'stat card' },
      h('div', { class: 'stat-label' }, label), h('div', { class: 'stat-value' }, value), h('div', { class: 'stat-sub' }, sub || ''));
    clear(cards).append(
      stat('Nodes', `${alive.length} alive`, nodes.length - alive.length ? `${nodes.length - alive.length} dead` : 'none dead'),
      stat('CPUs in use', `${fmtNumber(sum('CPU', 'resources_used'))} / ${fmtNumber(sum('CPU', 'resources_total'))}`),
      stat('GPUs in use', `${fmtNumber(sum('GPU', 'resources_used'))} / ${fmtNumber(sum('GPU', 'resources_total'))}`),
      // What the machines really use (their agents' heartbeats), not what jobs reserved.
      stat('Memory in use', `${fmtBytes(alive.reduce((a, n) => a + (n.memory_used_bytes || 0), 0))} / ` +
        `${fmtBytes(sum('memory', 'resources_total'))}`, sum('memory', 'resources_used') ?
        `${fmtBytes(sum('memory', 'resources_used'))} reserved by jobs` : ''),
      stat('Jobs', `${count('RUNNING')} running`, `${count('PENDING')} pending · ${jobs.length} in all`));

    const rows = nodes.map((n) => {
      const others = Object.keys(n.resources_total || {}).filter((k) => !['CPU', 'GPU', 'memory'].includes(k));
      return h('tr', { class: n.state === 'DEAD' ? 'dead' : '' },
        h('td', { class: 'mono', title: n.node_id }, shortId(n.node_id), n.is_head_node ? h('span', { class: 'tag' }, 'head') : null),
        h('td', {}, n.hostname || '—', h('div', { class: 'muted small mono' }, n.address || '')),
        h('td', {}, badge(n.state)),
        resourceCell(n.resources_total, n.resources_used, 'CPU'),
        gpuCell(n),
        // Memory: what the machine uses now (heartbeats), against its total.
        resourceCell(n.resources_total, { memory: n.memory_used_bytes || 0 }, 'memory', fmtBytes),
        h('td', { class: 'small' }, others.map((k) => h('div', {}, `${k} ${fmtNumber(n.resources_used?.[k] || 0)} / ${fmtNumber(n.resources_total[k])}`))),
        h('td', { title: fmtDateTime(n.last_heartbeat_ms) }, fmtAgo(n.last_heartbeat_ms)));
    });
    clear(nodesBox).append(table(['Node', 'Host', 'State', 'CPU', 'GPU', 'Memory', 'Other', 'Last heartbeat'], rows,
      'No nodes have joined. Start one with `cohort start --address HEAD:6380`.'));

    const pending = (status.pending_demand || []).map((p) => {
      const bundles = p.bundles || [];
      const shape = bundles.length ? JSON.stringify(bundles[0]) : '{}';
      const same = bundles.every((b) => JSON.stringify(b) === shape);
      return h('tr', {},
        h('td', {}, jobLink(p.job_id)),
        h('td', { class: 'mono' }, same ? `${bundles.length} × ${shape}` : bundles.map((b) => JSON.stringify(b)).join(' ')),
        h('td', {}, p.reason || '—'));
    });
    clear(pendingBox).append(table(['Job', 'Bundles (gang)', 'Why it waits'], pending, 'Nothing is waiting for resources.'));

    // Active jobs first, then the newest; five at most.
    const recent = jobs.slice().sort((a, b) => (TERMINAL.has(a.status) - TERMINAL.has(b.status)) ||
      ((b.start_time || 0) - (a.start_time || 0))).slice(0, 5);
    clear(jobsBox).append(table(['ID', 'Status', 'Entrypoint', 'Workers', 'Started', 'Duration'], recent.map((j) => h('tr', {},
      h('td', {}, jobLink(j.submission_id)),
      h('td', {}, badge(j.status)),
      h('td', { class: 'mono entry', title: j.entrypoint }, j.entrypoint),
      h('td', { class: 'num' }, workersOf(j)),
      h('td', { class: 'nowrap' }, fmtDateTime(j.start_time)),
      h('td', { class: 'nowrap' }, fmtDuration(jobDuration(j))))), 'No jobs yet.'));
  });

  let since = 0;
  const events = [];
  const stopEvents = every(2000, async () => {
    const r = await api('api/events?since=' + since);
    since = r.next ?? since;
    if (!r.events?.length) return;
    events.push(...r.events);
    if (events.length > 1000) events.splice(0, events.length - 1000);
    eventsEmpty.hidden = true;
    clear(eventsList).append(...events.slice().reverse().slice(0, 300).map((e) => h('li', {},
      h('time', { title: fmtDateTime(e.time_ms) }, fmtTime(e.time_ms)),
      h('span', { class: 'tag tag-' + e.kind }, e.kind),
      e.kind === 'job' ? jobLink(e.id) : h('span', { class: 'mono', title: e.id }, shortId(e.id)),
      h('span', { class: 'event-msg' }, e.message))));
  });
  return () => {
    stopStatus();
    stopEvents();
  };
}

// ---------------------------------------------------------------- jobs ----

function jobDuration(j) {
  if (!j.start_time) return null;
  return (j.end_time || Date.now()) - j.start_time;
}

function workersOf(j) {
  return j.scaling?.num_workers ?? (j.workers?.length || 1);
}

async function stopJob(id) {
  if (!confirm(`Stop job ${id}? Its workers get SIGTERM, then SIGKILL.`)) return false;
  await api(`api/jobs/${encodeURIComponent(id)}/stop`, { method: 'POST' });
  return true;
}

async function deleteJob(id) {
  if (!confirm(`Delete job ${id}? Its record and logs are removed.`)) return false;
  await api(`api/jobs/${encodeURIComponent(id)}`, { method: 'DELETE' });
  return true;
}

function actionButtons(j, after) {
  const run = (fn) => async (e) => {
    e.preventDefault();
    e.stopPropagation();
    try {
      if (await fn(j.submission_id)) after();
    } catch (err) {
      if (!(err instanceof Unauthorized)) alert(err.text || err.message);
    }
  };
  return TERMINAL.has(j.status)
    ? h('button', { class: 'btn danger', onclick: run(deleteJob) }, 'Delete')
    : h('button', { class: 'btn warn', onclick: run(stopJob) }, 'Stop');
}

function jobsView() {
  let filter = sessionStorage.getItem('cohort_jobs_filter') || 'ALL';
  let jobs = [];
  const select = h('select', { 'aria-label': 'status filter', onchange: () => {
    filter = select.value;
    sessionStorage.setItem('cohort_jobs_filter', filter);
    render();
  } });
  const box = h('div');
  app.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Jobs'), h('label', {}, 'Status ', select)),
    h('section', { class: 'card' }, box));

  function render() {
    const counts = Object.fromEntries(STATUSES.map((s) => [s, jobs.filter((j) => j.status === s).length]));
    clear(select).append(h('option', { value: 'ALL' }, `All (${jobs.length})`),
      ...STATUSES.map((s) => h('option', { value: s }, `${s} (${counts[s]})`)));
    select.value = filter;
    const shown = jobs.filter((j) => filter === 'ALL' || j.status === filter)
      .sort((a, b) => (b.start_time || 0) - (a.start_time || 0));
    const rows = shown.map((j) => h('tr', { class: 'clickable', onclick: () => { location.hash = '#/jobs/' + encodeURIComponent(j.submission_id); } },
      h('td', {}, jobLink(j.submission_id)),
      h('td', {}, badge(j.status)),
      h('td', { class: 'mono entry', title: j.entrypoint }, j.entrypoint),
      h('td', { class: 'num' }, workersOf(j)),
      h('td', { class: 'nowrap' }, fmtDateTime(j.start_time)),
      h('td', { class: 'nowrap' }, fmtDuration(jobDuration(j))),
      h('td', { class: 'msg', title: j.message || '' }, (j.message || '').split('\n')[0]),
      h('td', {}, actionButtons(j, refresh))));
    clear(box).append(table(['ID', 'Status', 'Entrypoint', 'Workers', 'Started', 'Duration', 'Message', ''], rows,
      filter === 'ALL' ? 'No jobs yet. Submit one with `cohort job submit -- …`.' : `No ${filter} jobs.`));
  }

  async function refresh() {
    jobs = await api('api/jobs/');
    render();
  }
  return every(2000, refresh);
}

// ---------------------------------------------------------------- a job ---

function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function jobView(id) {
  const enc = encodeURIComponent(id);
  const head = h('div', { class: 'page-head' });
  const summary = h('section', { class: 'card' });
  const workersBox = h('div');
  const resultsBox = h('div');
  const modeSel = h('select', { 'aria-label': 'series', onchange: () => drawCharts() },
    h('option', { value: 'rank' }, 'one line per rank'), h('option', { value: 'mean' }, 'mean of the ranks'));
  modeSel.value = localStorage.getItem('cohort_chart_mode') || 'mean';
  modeSel.addEventListener('change', () => localStorage.setItem('cohort_chart_mode', modeSel.value));
  const axisSel = h('select', { 'aria-label': 'x axis', onchange: () => { axisChosen = true; drawCharts(); } });
  let axisChosen = false;
  const chartGrid = h('div', { class: 'charts' });
  const chartsEmpty = h('p', { class: 'muted empty' },
    'No metrics reported yet. Workers report with cohort::train::Report (C++) or cohort.report() (Python).');
  const log = new LogView(id);
  window.__cohort.log = log;
  const store = new MetricStore();
  window.__cohort.metrics = store;
  const charts = {};
  window.__cohort.charts = charts;
  window.__cohort.chartPoints = (name) => (charts[name] ? charts[name].points() : { xs: 0, first: 0 });

  app.append(
    h('div', { class: 'crumbs' }, h('a', { href: '#/jobs' }, 'Jobs'), ' / ', h('span', { class: 'mono' }, id)),
    head, summary,
    h('section', { class: 'card' },
      h('div', { class: 'section-head' }, h('h2', {}, 'Training metrics'),
        h('div', { class: 'controls' }, h('label', {}, 'x ', axisSel), h('label', {}, 'Show ', modeSel))),
      chartsEmpty, chartGrid),
    section('Workers', workersBox),
    log.el,
    section('Results and checkpoints', resultsBox));

  let job = null;
  let gone = false;

  function drawCharts() {
    if (!store.rows.length) return;
    chartsEmpty.hidden = true;
    const axes = store.axes();
    if (axisSel.options.length !== axes.length) {
      const prev = axisSel.value;
      clear(axisSel).append(...axes.map((a) => h('option', { value: a }, a)));
      axisSel.value = axisChosen && axes.includes(prev) ? prev : axes[0];
    }
    const axis = axisSel.value || axes[0];
    const byGroup = new Map();
    for (const k of [...store.keys].sort()) {
      const g = groupOf(k);
      if (!byGroup.has(g)) byGroup.set(g, []);
      byGroup.get(g).push(k);
    }
    for (const g of GROUPS) {
      const keys = byGroup.get(g.id);
      if (!keys) continue;
      if (!charts[g.id]) {
        charts[g.id] = new MetricChart(g.title);
        // Keep the groups' order: loss, accuracy, throughput, other.
        const after = GROUPS.slice(GROUPS.indexOf(g) + 1).map((x) => charts[x.id]).find(Boolean);
        chartGrid.insertBefore(charts[g.id].el, after ? after.el : null);
        charts[g.id].el.dataset.chart = g.id;
      }
      charts[g.id].update(store.series(keys, axis, modeSel.value), axis);
    }
  }

  function renderJob() {
    if (!job) return;
    const terminal = TERMINAL.has(job.status);
    log.setJobTerminal(terminal);
    clear(head).append(
      h('h1', {}, 'Job ', h('span', { class: 'mono' }, id), ' ', badge(job.status)),
      h('div', { class: 'controls' }, actionButtons(job, () => refresh().catch(() => {}))));
    const maxFailures = job.failure?.max_failures;
    clear(summary).append(kv([
      ['Entrypoint', h('code', { class: 'entry-full' }, job.entrypoint)],
      ['Message', h('span', { class: 'pre-line' }, job.message || '—')],
      job.pending_reason ? ['Waiting for', job.pending_reason] : null,
      ['Started', fmtDateTime(job.start_time)],
      ['Duration', fmtDuration(jobDuration(job)) + (terminal ? '' : ' (running)')],
      ['Workers', `${workersOf(job)}${job.scaling ? ` × ${JSON.stringify(job.scaling.resources_per_worker)}, ${job.scaling.placement_strategy}` : ''}`],
      terminal ? null : ['Memory in use', `${fmtBytes(job.memory_rss_bytes || 0)} (the running workers' resident memory)`],
      ['Attempt', `${job.attempt ?? 0} (${job.attempt ? `${job.attempt} restart${job.attempt === 1 ? '' : 's'}` : 'no restarts'}` +
        `${maxFailures !== undefined ? `; max_failures ${maxFailures === -1 ? 'unlimited' : maxFailures}` : ''})`],
    ]));

    const latest = store.latestByRank();
    const lossKey = [...store.keys].find((k) => k === 'train_loss') || [...store.keys].find((k) => /loss/i.test(k));
    const workers = job.workers || [];
    log.knowRanks(workers.map((w) => w.rank));
    const rows = workers.map((w) => {
      const m = latest.get(w.rank);
      const epoch = m ? (m.epochs ? `${m.epoch}/${m.epochs}` : m.epoch ?? '—') : '—';
      return h('tr', {},
        h('td', { class: 'num' }, w.rank),
        h('td', {}, badge(w.status)),
        h('td', { class: 'mono', title: w.node_id }, shortId(w.node_id)),
        h('td', { class: 'num' }, w.pid ?? '—'),
        h('td', { class: 'num' }, w.exit_code ?? '—'),
        h('td', { class: 'num' }, job.attempt ?? 0),
        h('td', { class: 'num' }, epoch),
        h('td', { class: 'num' }, m && lossKey && typeof m[lossKey] === 'number' ? fmtNumber(m[lossKey]) : '—'),
        h('td', { class: 'nowrap' }, m && typeof m.time === 'number' ? fmtAgo(m.time * 1000) : '—'));
    });
    clear(workersBox).append(table(['Rank', 'Status', 'Node', 'PID', 'Exit code', 'Attempt', 'Epoch', lossKey || 'Loss', 'Last report'], rows,
      job.status === 'PENDING' ? 'Not placed yet.' : 'No workers in this attempt.'));

    const results = job.results || [];
    clear(resultsBox).append(kv([
      ['Results URI', job.results_uri ? h('code', {}, job.results_uri) : '—'],
      ['Results dir', job.results_dir ? h('code', {}, job.results_dir) : '—'],
      ['Checkpoint dir', job.checkpoint_dir ? h('code', {}, job.checkpoint_dir) : '—'],
    ]), results.length ? table(['Object', 'Size', 'CRC32C'], results.map((r) => h('tr', {},
      h('td', { class: 'mono' }, r.uri), h('td', { class: 'num' }, fmtBytes(r.size_bytes)), h('td', { class: 'mono' }, r.crc32c || '—'))), '') :
      h('p', { class: 'muted small' }, terminal ? 'No result objects listed.' : 'Listed here once the job succeeds (with a results_uri).'));
  }

  async function refresh() {
    try {
      job = await api(`api/jobs/${enc}`);
    } catch (e) {
      if (e.status === 404) {
        gone = true;
        clear(head).append(h('h1', {}, 'Job ', h('span', { class: 'mono' }, id)));
        clear(summary).append(h('p', { class: 'error' }, `Job ${id} does not exist (or was deleted).`));
        return;
      }
      throw e;
    }
    renderJob();
  }

  let metricsDone = false;
  async function pollMetrics() {
    if (metricsDone || gone) return;
    const terminal = job && TERMINAL.has(job.status);
    const r = await api(`api/jobs/${enc}/metrics?since=${store.next}`);
    store.next = r.next ?? store.next;
    if (r.metrics?.length) {
      store.add(r.metrics);
      drawCharts();
      renderJob();
    }
    if (terminal && !r.metrics?.length) metricsDone = true; // drained after the end
  }

  const stopJobPoll = every(2000, refresh);
  const stopMetrics = every(1000, pollMetrics);
  log.start();
  return () => {
    stopJobPoll();
    stopMetrics();
    log.stop();
    for (const c of Object.values(charts)) c.destroy();
  };
}

// ---------------------------------------------------------------- start ---

(async () => {
  await loadAuthMode();
  if (!authRequired()) {
    start();
    return;
  }
  if (!hasToken()) {
    showLogin('');
    return;
  }
  // A stored token: refresh the cookie (the log WebSocket needs it).
  const stored = localStorage.getItem('cohort_token');
  try {
    if (await signIn(stored)) start();
    else {
      forgetToken();
      showLogin('The stored token was refused (401). Enter the current one.');
    }
  } catch (e) {
    showLogin('Cannot reach the head: ' + e.message);
  }
})();
