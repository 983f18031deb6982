// AI Gateway: the account's gateways, their settings, request logs (filters, paging, bodies,
// feedback) and analytics charts. Routes: crates/kiln-http/src/gateway/{admin,logs}.rs.

import { api, el, table, notice } from '../app.js';
import { lineChart } from '../charts.js';

const STYLE = `
.gw-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 12px; }
.gw-form { display: grid; grid-template-columns: max-content 1fr; gap: 6px 10px; align-items: center; max-width: 640px; }
.gw-form > input, .gw-form > select, .gw-form > button { justify-self: start; }
.gw-form .gw-hint { grid-column: 2; font-size: 0.85em; opacity: 0.7; }
.gw-filters { display: flex; flex-wrap: wrap; gap: 8px; align-items: end; margin: 8px 0; }
.gw-filters label { display: flex; flex-direction: column; font-size: 0.85em; gap: 2px; }
.gw-log { width: 100%; border-collapse: collapse; font-size: 0.9em; }
.gw-log th, .gw-log td { text-align: left; padding: 4px 6px; border-bottom: 1px solid rgba(127,127,127,0.25); white-space: nowrap; }
.gw-log tbody tr { cursor: pointer; }
.gw-log tbody tr:hover { background: rgba(127,127,127,0.12); }
.gw-log tbody tr.gw-selected { background: rgba(47,126,216,0.18); }
.gw-bad { color: #d62728; }
.gw-good { color: #2ca02c; }
.gw-pre { max-height: 360px; overflow: auto; padding: 8px; background: rgba(127,127,127,0.1); border-radius: 4px; white-space: pre-wrap; word-break: break-all; font-size: 0.85em; }
.gw-pager { display: flex; gap: 8px; align-items: center; margin: 6px 0; }
.gw-totals { display: flex; flex-wrap: wrap; gap: 16px; margin: 6px 0; }
.gw-totals b { display: block; font-size: 1.2em; }
.gw-chart { border: 1px solid rgba(127,127,127,0.25); border-radius: 6px; padding: 6px; }
.gw-section { margin: 0 0 16px; }
`;

function injectStyle() {
  if (document.getElementById('gateway-page-style')) return;
  document.head.append(el('style', { id: 'gateway-page-style' }, STYLE));
}

const base = () => api.accountPath('/ai-gateway/gateways');
const enc = encodeURIComponent;

/** A list route's envelope with its `result_info`. */
async function listing(path) {
  const response = await api.raw(path, { headers: { accept: 'application/json' } });
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: reported below.
  }
  if (!response.ok || !body || body.success === false) {
    const first = body?.errors?.[0];
    const error = new Error(first?.message ?? `HTTP ${response.status}`);
    error.status = response.status;
    error.code = first?.code;
    throw error;
  }
  return { items: body.result ?? [], info: body.result_info ?? {} };
}

function when(text) {
  if (!text) return '';
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? String(text) : date.toLocaleString();
}

function usd(cost) {
  if (cost === null || cost === undefined) return '—';
  if (cost === 0) return '$0';
  return cost < 0.01 ? `$${Number(cost).toPrecision(2)}` : `$${Number(cost).toFixed(4)}`;
}

function pretty(value) {
  if (typeof value === 'string') {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

function section(title, ...children) {
  return el('section', { class: 'panel gw-section' }, el('h3', {}, title), ...children);
}

function button(label, onclick, attrs = {}) {
  return el('button', { type: 'button', ...attrs, onclick }, label);
}

// --- Settings form -------------------------------------------------------------------------

const FIELDS = [
  { key: 'cache_ttl', label: 'Cache TTL (s)', kind: 'number', hint: 'blank: no caching; at most 2592000' },
  { key: 'cache_invalidate_on_update', label: 'Invalidate cache on update', kind: 'bool' },
  { key: 'collect_logs', label: 'Collect logs', kind: 'bool' },
  { key: 'log_management', label: 'Logs kept', kind: 'number', hint: 'blank: no cap' },
  { key: 'log_management_strategy', label: 'When full', kind: 'select', options: ['STOP_INSERTING', 'DELETE_OLDEST'] },
  { key: 'rate_limiting_limit', label: 'Rate limit (requests)', kind: 'number', hint: 'blank or 0: no limit' },
  { key: 'rate_limiting_interval', label: 'Rate limit interval (s)', kind: 'number' },
  { key: 'rate_limiting_technique', label: 'Rate limit technique', kind: 'select', options: ['fixed', 'sliding'] },
  { key: 'authentication', label: 'Require cf-aig-authorization', kind: 'bool' },
  { key: 'retry_max_attempts', label: 'Retry attempts', kind: 'number', hint: '1 to 5' },
  { key: 'retry_delay', label: 'Retry delay (ms)', kind: 'number', hint: '0 to 5000' },
  { key: 'retry_backoff', label: 'Retry backoff', kind: 'select', options: ['constant', 'linear', 'exponential'] },
];

const DEFAULTS = {
  cache_ttl: null, cache_invalidate_on_update: false, collect_logs: true, log_management: null,
  log_management_strategy: 'STOP_INSERTING', rate_limiting_limit: null, rate_limiting_interval: null,
  rate_limiting_technique: 'fixed', authentication: false, retry_max_attempts: 1, retry_delay: 0,
  retry_backoff: 'constant',
};

/** Inputs for the gateway settings; `read()` gives the settings object. */
function settingsForm(values, prefix) {
  const inputs = {};
  const rows = [];
  for (const field of FIELDS) {
    const id = `${prefix}-${field.key}`;
    const value = values[field.key] ?? DEFAULTS[field.key];
    let input;
    if (field.kind === 'bool') {
      input = el('input', { type: 'checkbox', id, dataset: { field: field.key } });
      input.checked = Boolean(value);
    } else if (field.kind === 'select') {
      input = el('select', { id, dataset: { field: field.key } },
        ...field.options.map((option) => el('option', { value: option }, option)));
      input.value = value ?? field.options[0];
    } else {
      input = el('input', { type: 'number', min: '0', id, dataset: { field: field.key } });
      input.value = value === null || value === undefined ? '' : String(value);
    }
    inputs[field.key] = input;
    rows.push(el('label', { for: id }, field.label), input);
    if (field.hint) rows.push(el('span', { class: 'gw-hint' }, field.hint));
  }
  const read = () => {
    const out = {};
    for (const field of FIELDS) {
      const input = inputs[field.key];
      if (field.kind === 'bool') out[field.key] = input.checked;
      else if (field.kind === 'select') out[field.key] = input.value;
      else out[field.key] = input.value.trim() === '' ? null : Number(input.value);
    }
    return out;
  };
  return { rows, read };
}

// --- Gateway list ----------------------------------------------------------------------------

async function renderList(root) {
  root.append(el('h2', {}, 'AI Gateway'));
  const status = el('div');
  const holder = el('div', { 'data-test': 'gateway-list' }, 'Loading…');
  root.append(status, section('Gateways', holder));

  const refresh = async () => {
    status.replaceChildren();
    try {
      const gateways = [];
      for (let page = 1; page < 50; page += 1) {
        const { items, info } = await listing(`${base()}?page=${page}&per_page=50`);
        gateways.push(...items);
        if (items.length < 50 || (info.total_count ?? 0) <= gateways.length) break;
      }
      if (!gateways.length) {
        holder.replaceChildren(el('p', {}, 'No gateways yet. Create one below, then send requests to ',
          el('code', {}, `/v1/${api.account}/{gateway}/workers-ai/{model}`), '.'));
        return;
      }
      holder.replaceChildren(table([
        { key: 'id', label: 'Gateway', render: (g) => el('a', { href: `#/gateway?gateway=${enc(g.id)}`, 'data-test': 'gateway-link' }, g.id) },
        { key: 'collect_logs', label: 'Logs', render: (g) => (g.collect_logs ? 'on' : 'off') },
        { key: 'cache_ttl', label: 'Cache TTL', render: (g) => (g.cache_ttl ? `${g.cache_ttl}s` : 'off') },
        {
          key: 'rate_limiting_limit', label: 'Rate limit',
          render: (g) => (g.rate_limiting_limit ? `${g.rate_limiting_limit} / ${g.rate_limiting_interval}s (${g.rate_limiting_technique})` : 'off'),
        },
        { key: 'authentication', label: 'Auth', render: (g) => (g.authentication ? 'required' : 'no') },
        { key: 'created_at', label: 'Created', render: (g) => when(g.created_at) },
        {
          key: 'actions', label: '',
          render: (g) => button('Delete', async () => {
            if (!window.confirm(`Delete gateway ${g.id}? Its logs go with it.`)) return;
            try {
              await api.del(`${base()}/${enc(g.id)}`);
              refresh();
            } catch (error) {
              notice(status, error);
            }
          }, { class: 'danger', 'data-test': 'gateway-delete' }),
        },
      ], gateways));
    } catch (error) {
      holder.replaceChildren();
      notice(status, error);
    }
  };

  const id = el('input', { id: 'gw-new-id', placeholder: 'my-gateway', required: 'required', 'data-test': 'gateway-new-id' });
  const form = settingsForm({}, 'gw-new');
  const createStatus = el('div');
  const create = el('form', {
    class: 'gw-form',
    onsubmit: async (event) => {
      event.preventDefault();
      createStatus.replaceChildren();
      try {
        const created = await api.post(base(), { id: id.value.trim(), ...form.read() });
        location.hash = `#/gateway?gateway=${enc(created.id)}`;
      } catch (error) {
        notice(createStatus, error);
      }
    },
  }, el('label', { for: 'gw-new-id' }, 'Id'), id,
  el('span', { class: 'gw-hint' }, '1–64 letters, digits, - and _'),
  ...form.rows, el('span'), el('button', { type: 'submit', class: 'primary', 'data-test': 'gateway-create' }, 'Create gateway'));
  root.append(section('New gateway', createStatus, create));
  await refresh();
}

// --- One gateway -----------------------------------------------------------------------------

async function renderGateway(root, name) {
  const path = `${base()}/${enc(name)}`;
  root.append(el('p', {}, el('a', { href: '#/gateway' }, '← All gateways')), el('h2', {}, `Gateway ${name}`));
  const status = el('div');
  root.append(status);
  let gateway;
  try {
    gateway = await api.get(path);
  } catch (error) {
    notice(status, error);
    return;
  }
  const urlLine = el('p', {});
  api.get(`${path}/url/workers-ai`).then((url) => {
    urlLine.replaceChildren('Workers AI through this gateway: ', el('code', {}, `${url}/{model}`));
  }).catch(() => {});

  const charts = el('div', { 'data-test': 'gateway-charts' });
  const logs = el('div');
  const settings = el('div');
  root.append(urlLine, section('Analytics', charts), section('Request log', logs), section('Settings', settings));

  renderSettings(settings, path, gateway);
  const chartView = renderCharts(charts, path);
  const logView = renderLogs(logs, path, gateway);
  // Auto-refresh while this page is shown.
  const timer = setInterval(() => {
    if (!logs.isConnected) {
      clearInterval(timer);
      return;
    }
    if (document.hidden) return;
    logView.refresh(true);
    chartView.refresh();
  }, 10_000);
  await Promise.all([chartView.refresh(), logView.refresh()]);
}

function renderSettings(holder, path, gateway) {
  const status = el('div');
  const form = settingsForm(gateway, 'gw-edit');
  const saved = el('span', { 'data-test': 'gateway-saved' });
  const editor = el('form', {
    class: 'gw-form',
    onsubmit: async (event) => {
      event.preventDefault();
      status.replaceChildren();
      saved.textContent = '';
      try {
        // PUT replaces every setting: send them all.
        const updated = await api.put(path, form.read());
        Object.assign(gateway, updated);
        saved.textContent = `Saved ${when(updated.modified_at)}`;
      } catch (error) {
        notice(status, error);
      }
    },
  }, ...form.rows, el('span'), el('div', {}, el('button', { type: 'submit', class: 'primary', 'data-test': 'gateway-save' }, 'Save settings'), ' ', saved));
  holder.replaceChildren(status, editor,
    el('p', { class: 'gw-hint' }, `Created ${when(gateway.created_at)} · modified ${when(gateway.modified_at)}`));
}

// --- Charts ----------------------------------------------------------------------------------

const RANGES = [
  { label: 'Last hour', ms: 3600e3, interval: 'minute', step: 60e3 },
  { label: 'Last 24 hours', ms: 86400e3, interval: 'hour', step: 3600e3 },
  { label: 'Last 7 days', ms: 7 * 86400e3, interval: 'hour', step: 3600e3 },
  { label: 'Last 30 days', ms: 30 * 86400e3, interval: 'day', step: 86400e3 },
];

function renderCharts(holder, path) {
  const select = el('select', { 'data-test': 'gateway-range' },
    ...RANGES.map((range, i) => el('option', { value: String(i) }, range.label)));
  const totals = el('div', { class: 'gw-totals' });
  const grid = el('div', { class: 'gw-grid' });
  const status = el('div');
  holder.replaceChildren(el('div', {}, 'Range: ', select), status, totals, grid);

  const refresh = async () => {
    const range = RANGES[Number(select.value)] ?? RANGES[0];
    const end = Date.now();
    const start = end - range.ms;
    const query = new URLSearchParams({
      start: new Date(start).toISOString(), end: new Date(end).toISOString(),
      interval: range.interval, group_by: 'none',
    });
    let report;
    try {
      report = await api.get(`${path}/analytics?${query}`);
    } catch (error) {
      status.replaceChildren();
      notice(status, error);
      return;
    }
    status.replaceChildren();
    const t = report.totals ?? {};
    const stat = (label, value) => el('div', {}, el('b', {}, value), label);
    totals.replaceChildren(
      stat('requests', String(t.requests ?? 0)),
      stat('errors', String(t.errors ?? 0)),
      stat('cache hit rate', `${((t.cache_hit_ratio ?? 0) * 100).toFixed(1)}%`),
      stat('tokens in / out', `${t.tokens_in ?? 0} / ${t.tokens_out ?? 0}`),
      stat('estimated cost', usd(t.cost ?? 0)),
      stat('neurons', String(Math.round(t.neurons ?? 0))),
    );
    // Buckets with no requests are absent: fill them with zeros (while that stays small).
    const byBucket = new Map();
    for (const row of report.series ?? []) {
      const at = new Date(row.bucket).getTime();
      const sum = byBucket.get(at) ?? { requests: 0, errors: 0, cached: 0, tokens_in: 0, tokens_out: 0, cost: 0 };
      for (const key of Object.keys(sum)) sum[key] += Number(row[key] ?? 0);
      byBucket.set(at, sum);
    }
    const zero = { requests: 0, errors: 0, cached: 0, tokens_in: 0, tokens_out: 0, cost: 0 };
    const first = Math.floor(start / range.step) * range.step;
    const times = new Set(byBucket.keys());
    if ((end - first) / range.step <= 800) for (let at = first; at <= end; at += range.step) times.add(at);
    const rows = [...times].sort((a, b) => a - b).map((at) => ({ x: new Date(at), ...zero, ...byBucket.get(at) }));
    const line = (name, key, map = (r) => r[key]) => ({ name, points: rows.map((r) => ({ x: r.x, y: map(r) })) });
    const opts = { height: 180, xMin: new Date(start), xMax: new Date(end) };
    grid.replaceChildren(
      el('div', { class: 'gw-chart' }, lineChart([line('requests', 'requests'), line('errors', 'errors')], { ...opts, title: 'Requests', legend: true })),
      el('div', { class: 'gw-chart' }, lineChart([line('tokens in', 'tokens_in'), line('tokens out', 'tokens_out')], { ...opts, title: 'Tokens', legend: true })),
      el('div', { class: 'gw-chart' }, lineChart([line('cost', 'cost')], { ...opts, title: 'Estimated cost (USD)', format: (y) => usd(y) })),
      el('div', { class: 'gw-chart' }, lineChart([{
        name: 'cache hit rate',
        points: rows.filter((r) => r.requests > 0).map((r) => ({ x: r.x, y: (100 * r.cached) / r.requests })),
      }], { ...opts, title: 'Cache hit rate (%)', yMax: 100, format: (y) => `${Math.round(y)}%`, empty: 'No requests in this range' })),
      el('div', { class: 'gw-chart' }, lineChart([line('errors', 'errors'), {
        name: 'error rate %',
        points: rows.filter((r) => r.requests > 0).map((r) => ({ x: r.x, y: (100 * r.errors) / r.requests })),
      }], { ...opts, title: 'Errors', legend: true })),
    );
  };
  select.onchange = refresh;
  return { refresh };
}

// --- Logs ------------------------------------------------------------------------------------

const PER_PAGE = 20;

function renderLogs(holder, path, gateway) {
  const state = { page: 1, selected: null };
  const field = (label, input) => el('label', {}, label, input);
  const tri = (testId) => el('select', { 'data-test': testId },
    el('option', { value: '' }, 'any'), el('option', { value: 'true' }, 'yes'), el('option', { value: 'false' }, 'no'));
  const search = el('input', { type: 'search', placeholder: 'id, model, path, metadata…', 'data-test': 'gateway-log-search' });
  const success = tri('gateway-log-success');
  const cached = tri('gateway-log-cached');
  const provider = el('input', { placeholder: 'workers-ai', size: '12', 'data-test': 'gateway-log-provider' });
  const model = el('input', { placeholder: '@cf/…', size: '24', 'data-test': 'gateway-log-model' });
  const feedback = el('select', { 'data-test': 'gateway-log-feedback' },
    el('option', { value: '' }, 'any'), el('option', { value: '1' }, 'good'), el('option', { value: '0' }, 'bad'));
  const order = el('select', {},
    ...['created_at', 'duration', 'cost', 'tokens', 'model', 'provider', 'success', 'cached', 'feedback']
      .map((o) => el('option', { value: o }, o)));
  const direction = el('select', {}, el('option', { value: 'desc' }, 'newest / largest first'), el('option', { value: 'asc' }, 'oldest / smallest first'));
  const apply = () => {
    state.page = 1;
    refresh();
  };
  const filters = el('form', {
    class: 'gw-filters',
    onsubmit: (event) => {
      event.preventDefault();
      apply();
    },
  }, field('Search', search), field('Success', success), field('Cached', cached), field('Provider', provider),
  field('Model', model), field('Feedback', feedback), field('Order by', order), field('Direction', direction),
  el('button', { type: 'submit' }, 'Apply'), button('Refresh', () => refresh()));
  for (const select of [success, cached, feedback, order, direction]) select.onchange = apply;

  const status = el('div');
  const note = gateway.collect_logs ? null
    : el('p', { class: 'gw-hint' }, 'This gateway does not collect logs (Settings → Collect logs); analytics still count every request.');
  const tbody = el('tbody');
  const logTable = el('table', { class: 'data gw-log', 'data-test': 'gateway-log' },
    el('thead', {}, el('tr', {}, ...['Time', 'Status', 'Cached', 'Request (provider/model)', 'Tokens in/out', 'Cost', 'Duration', 'Feedback'].map((h) => el('th', {}, h)))),
    tbody);
  const pageLabel = el('span', { 'data-test': 'gateway-log-page' });
  const prev = button('← Newer', () => {
    state.page -= 1;
    refresh();
  });
  const next = button('Older →', () => {
    state.page += 1;
    refresh();
  });
  const detail = el('div', { 'data-test': 'gateway-log-detail' });
  holder.replaceChildren(...[filters, status, note].filter(Boolean), el('div', { style: 'overflow-x: auto' }, logTable),
    el('div', { class: 'gw-pager' }, prev, pageLabel, next), detail);

  async function refresh(quiet = false) {
    const query = new URLSearchParams({ page: String(state.page), per_page: String(PER_PAGE), order_by: order.value, direction: direction.value });
    const add = (key, value) => {
      if (value.trim()) query.set(key, value.trim());
    };
    add('search', search.value);
    add('success', success.value);
    add('cached', cached.value);
    add('provider', provider.value);
    add('model', model.value);
    add('feedback', feedback.value);
    let items;
    let info;
    try {
      ({ items, info } = await listing(`${path}/logs?${query}`));
    } catch (error) {
      if (!quiet) {
        status.replaceChildren();
        notice(status, error);
      }
      return;
    }
    status.replaceChildren();
    const total = info.total_count ?? items.length;
    const pages = Math.max(1, Math.ceil(total / PER_PAGE));
    pageLabel.textContent = `Page ${state.page} of ${pages} · ${total} log${total === 1 ? '' : 's'}`;
    prev.disabled = state.page <= 1;
    next.disabled = state.page >= pages;
    tbody.replaceChildren(...items.map((log) => logRow(log)));
    if (!items.length) {
      tbody.append(el('tr', {}, el('td', { colspan: '8' }, state.page > 1 ? 'No logs on this page.' : 'No logs match.')));
    }
  }

  function logRow(log) {
    const row = el('tr', {
      'data-test': 'gateway-log-row',
      dataset: { id: log.id, model: log.model ?? '' },
      onclick: () => {
        for (const other of tbody.querySelectorAll('tr.gw-selected')) other.classList.remove('gw-selected');
        row.classList.add('gw-selected');
        state.selected = log.id;
        showDetail(log.id);
      },
    },
    el('td', { title: log.id }, when(log.created_at)),
    el('td', { class: log.success ? 'gw-good' : 'gw-bad' }, `${log.success ? '✓' : '✗'} ${log.status_code ?? ''}`),
    el('td', {}, log.cached ? 'hit' : ''),
    el('td', { title: `${log.provider ?? ''} · ${log.model ?? ''}${log.model_type ? ` (${log.model_type})` : ''}` },
      log.path || `${log.provider ?? ''}/${log.model ?? ''}`),
    el('td', {}, `${log.tokens_in ?? 0} / ${log.tokens_out ?? 0}`),
    el('td', {}, usd(log.cost)),
    el('td', {}, `${log.duration ?? 0} ms`),
    el('td', {}, log.feedback === 1 ? '▲ good' : log.feedback === -1 ? '▼ bad' : ''));
    if (log.id === state.selected) row.classList.add('gw-selected');
    return row;
  }

  async function showDetail(id) {
    const logPath = `${path}/logs/${enc(id)}`;
    detail.replaceChildren(el('p', {}, 'Loading…'));
    let log;
    try {
      log = await api.get(logPath);
    } catch (error) {
      detail.replaceChildren();
      notice(detail, error);
      return;
    }
    if (state.selected !== id) return;
    const body = (part) => {
      const pre = el('pre', { class: 'gw-pre', 'data-test': `gateway-${part}-body` }, 'Loading…');
      api.get(`${logPath}/${part}`).then((value) => {
        pre.textContent = pretty(value);
      }).catch((error) => {
        // A body too large to keep: show the head the log holds.
        const head = log[`${part}_head`];
        pre.textContent = head ? `${head}\n… (${error.message})` : `(${error.message})`;
      });
      return pre;
    };
    const feedbackLabel = el('span', { 'data-test': 'gateway-feedback-state' });
    const showFeedback = (value) => {
      feedbackLabel.textContent = value === 1 ? 'Rated good ▲' : value === -1 ? 'Rated bad ▼' : 'Not rated';
    };
    showFeedback(log.feedback);
    const rate = (value) => async () => {
      try {
        const updated = await api.patch(logPath, { feedback: value });
        showFeedback(updated.feedback);
        const row = tbody.querySelector(`tr[data-id="${CSS.escape(id)}"] td:last-child`);
        if (row) row.textContent = updated.feedback === 1 ? '▲ good' : updated.feedback === -1 ? '▼ bad' : '';
      } catch (error) {
        notice(detail, error);
      }
    };
    let metadata = log.metadata;
    try {
      metadata = metadata ? JSON.parse(metadata) : null;
    } catch {
      // Shown as text.
    }
    const facts = [
      ['Id', log.id], ['Time', when(log.created_at)], ['Provider', log.provider], ['Model', log.model],
      ['Model type', log.model_type], ['Path', log.path], ['Status', log.status_code], ['Cached', log.cached ? 'yes' : 'no'],
      ['Tokens in / out', `${log.tokens_in} / ${log.tokens_out}`], ['Cost', usd(log.cost)], ['Duration', `${log.duration} ms`],
      ['Request', `${log.request_content_type ?? ''} · ${log.request_size ?? 0} bytes`],
      ['Response', `${log.response_content_type ?? ''} · ${log.response_size ?? 0} bytes`],
      ['Event id', log.event_id], ['Metadata', metadata ? pretty(metadata) : null],
    ].filter(([, value]) => value !== null && value !== undefined && value !== '');
    detail.replaceChildren(
      el('h4', {}, `Log ${log.id}`),
      el('div', { class: 'gw-pager' }, feedbackLabel,
        button('▲ Good', rate(1), { 'data-test': 'gateway-feedback-up' }),
        button('▼ Bad', rate(-1), { 'data-test': 'gateway-feedback-down' }),
        button('Clear', rate(0), { 'data-test': 'gateway-feedback-clear' }),
        button('Close', () => {
          state.selected = null;
          detail.replaceChildren();
          for (const other of tbody.querySelectorAll('tr.gw-selected')) other.classList.remove('gw-selected');
        })),
      el('dl', { class: 'gw-form' }, ...facts.flatMap(([key, value]) => [el('dt', {}, key), el('dd', { style: 'margin: 0; white-space: pre-wrap' }, String(value))])),
      el('div', { class: 'gw-grid' },
        el('div', {}, el('h4', {}, 'Request body'), body('request')),
        el('div', {}, el('h4', {}, 'Response body'), body('response'))),
    );
  }

  return { refresh };
}

export default {
  id: 'gateway',
  title: 'AI Gateway',
  async render(root, params = {}) {
    injectStyle();
    if (params.gateway) await renderGateway(root, params.gateway);
    else await renderList(root);
  },
};
