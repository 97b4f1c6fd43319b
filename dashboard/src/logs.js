// A job's log, followed live: the head's WebSocket
// (api/jobs/{id}/logs/tail: TEXT frames of raw log text, close 1000 at the
// end; authenticated by the session cookie), or, when the WebSocket cannot be
// opened, polling GET api/jobs/{id}/logs and appending what is new.
import { api, wsUrl, Unauthorized } from './api.js';
import { h, clear } from './util.js';

const MAX_LINES = 50000;
const RANK_PREFIX = /^\[rank (\d+)\]/;

export class LogView {
  constructor(jobId) {
    this.jobId = jobId;
    this.lines = [];
    this.partial = '';
    this.received = 0; // characters of the log received so far
    this.dropped = 0;
    this.rank = 'all';
    this.follow = true;
    this.ranks = new Set();
    this.ws = null;
    this.pollTimer = null;
    this.stopped = false;
    this.jobTerminal = false;

    this.state = h('span', { class: 'log-state' }, 'connecting…');
    this.rankSelect = h('select', { onchange: () => this.setRank(this.rankSelect.value), 'aria-label': 'rank filter' },
      h('option', { value: 'all' }, 'All ranks'));
    this.followBox = h('input', { type: 'checkbox', checked: true, onchange: () => this.setFollow(this.followBox.checked) });
    this.count = h('span', { class: 'muted' });
    this.pre = h('pre', { class: 'log', id: 'log' });
    this.pre.addEventListener('scroll', () => {
      const atBottom = this.pre.scrollHeight - this.pre.scrollTop - this.pre.clientHeight < 24;
      if (atBottom !== this.follow) {
        this.follow = atBottom;
        this.followBox.checked = atBottom;
      }
    });
    this.el = h('section', { class: 'card' },
      h('div', { class: 'section-head' },
        h('h2', {}, 'Logs'),
        h('div', { class: 'controls' },
          this.state, this.count,
          h('label', {}, 'Rank ', this.rankSelect),
          h('label', {}, this.followBox, ' Follow'))),
      this.pre);
  }

  start() {
    let opened = false;
    try {
      this.ws = new WebSocket(wsUrl(`api/jobs/${encodeURIComponent(this.jobId)}/logs/tail`));
    } catch (_) {
      this.startPolling();
      return;
    }
    this.ws.onopen = () => {
      opened = true;
      this.setState('live', 'live');
    };
    this.ws.onmessage = (e) => this.append(typeof e.data === 'string' ? e.data : '');
    this.ws.onclose = (e) => {
      this.ws = null;
      if (this.stopped) return;
      if (e.code === 1000) {
        this.flushPartial();
        this.setState('ended', 'complete');
      } else {
        // Refused (no cookie, an old head, a proxy without WebSockets) or cut: poll instead.
        this.startPolling(opened ? 'reconnecting (polling)' : 'polling');
      }
    };
  }

  startPolling(label = 'polling') {
    if (this.stopped || this.pollTimer) return;
    this.setState('poll', label);
    const tick = async () => {
      this.pollTimer = null;
      if (this.stopped) return;
      const terminalBefore = this.jobTerminal;
      try {
        const r = await api(`api/jobs/${encodeURIComponent(this.jobId)}/logs`);
        const text = r.logs || '';
        if (text.length > this.received) this.append(text.slice(this.received));
        if (terminalBefore) {
          this.flushPartial();
          this.setState('ended', 'complete');
          return;
        }
      } catch (e) {
        if (e instanceof Unauthorized) return;
      }
      if (!this.stopped) this.pollTimer = setTimeout(tick, 1500);
    };
    tick();
  }

  // Told by the job page when the job reached a terminal status.
  setJobTerminal(t) {
    this.jobTerminal = t;
  }

  setState(kind, text) {
    this.state.className = 'log-state log-' + kind;
    this.state.textContent = text;
  }

  append(text) {
    if (!text) return;
    this.received += text.length;
    const parts = (this.partial + text).split('\n');
    this.partial = parts.pop();
    this.addLines(parts);
  }

  flushPartial() {
    if (this.partial) {
      const p = this.partial;
      this.partial = '';
      this.addLines([p]);
    }
  }

  addLines(newLines) {
    if (!newLines.length) return;
    let chunk = '';
    for (const line of newLines) {
      const m = RANK_PREFIX.exec(line);
      if (m && !this.ranks.has(m[1])) this.addRank(m[1]);
      this.lines.push(line);
      if (this.matches(line)) chunk += line + '\n';
    }
    if (this.lines.length > MAX_LINES) {
      const drop = this.lines.length - MAX_LINES;
      this.lines.splice(0, drop);
      this.dropped += drop;
      this.render();
    } else if (chunk) {
      this.pre.append(document.createTextNode(chunk));
      this.scroll();
    }
    this.updateCount();
  }

  addRank(r) {
    this.ranks.add(r);
    const sorted = [...this.ranks].sort((a, b) => a - b);
    clear(this.rankSelect).append(
      h('option', { value: 'all' }, 'All ranks'),
      ...sorted.map((x) => h('option', { value: x }, 'rank ' + x)));
    this.rankSelect.value = this.rank;
  }

  // Ranks known from the job's details (before they print anything).
  knowRanks(ranks) {
    for (const r of ranks) if (!this.ranks.has(String(r))) this.addRank(String(r));
  }

  matches(line) {
    if (this.rank === 'all') return true;
    const m = RANK_PREFIX.exec(line);
    return m !== null && m[1] === this.rank;
  }

  setRank(r) {
    this.rank = r;
    this.render();
  }

  setFollow(f) {
    this.follow = f;
    this.scroll();
  }

  render() {
    const text = this.lines.filter((l) => this.matches(l)).join('\n');
    this.pre.textContent = text ? text + '\n' : '';
    this.updateCount();
    this.scroll();
  }

  updateCount() {
    const shown = this.rank === 'all' ? this.lines.length : this.lines.filter((l) => this.matches(l)).length;
    this.count.textContent = `${shown} line${shown === 1 ? '' : 's'}${this.dropped ? ` (first ${this.dropped} dropped)` : ''}`;
  }

  scroll() {
    if (this.follow) this.pre.scrollTop = this.pre.scrollHeight;
  }

  text() {
    return this.lines.join('\n') + (this.partial ? '\n' + this.partial : '');
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close(1000);
    if (this.pollTimer) clearTimeout(this.pollTimer);
  }
}
