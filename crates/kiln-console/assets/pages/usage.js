// Usage and API tokens: neurons per day and model against the free allocation
// (`GET …/ai/usage`, crates/kiln-http/src/platform/usage_routes.rs) and the account's tokens
// (`…/tokens`, crates/kiln-http/src/platform/token_routes.rs).

import { api, el, table, notice } from '../app.js';
import { barChart } from '../charts.js';

const STYLE = `
.us-section { margin: 0 0 16px; }
.us-facts { display: flex; flex-wrap: wrap; gap: 18px; align-items: end; }
.us-facts b { display: block; font-size: 1.2em; }
.us-meter { width: 260px; height: 12px; border-radius: 6px; background: rgba(127,127,127,0.2); overflow: hidden; }
.us-meter > div { height: 100%; background: #2f7ed8; }
.us-meter.us-over > div { background: #d62728; }
.us-hint { font-size: 0.85em; opacity: 0.75; }
.us-row { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; margin: 6px 0; }
.us-scopes { display: flex; flex-wrap: wrap; gap: 4px 14px; }
.us-secret { padding: 10px; border: 1px solid #f28f43; border-radius: 6px; margin: 8px 0; }
.us-secret code { word-break: break-all; font-size: 1.05em; }
.us-chart { border: 1px solid rgba(127,127,127,0.25); border-radius: 6px; padding: 6px; max-width: 760px; margin: 12px 0; }
`;

const SCOPES = [
  ['workers-ai:read', 'run models, catalog, usage, batches'],
  ['workers-ai:edit', 'fine-tunes and their assets'],
  ['ai-gateway:read', 'gateways, logs, analytics'],
  ['ai-gateway:edit', 'gateway changes, log feedback and deletion'],
  ['ai-gateway:run', 'call authenticated gateways'],
  ['vectorize:read', 'describe, list and query indexes'],
  ['vectorize:edit', 'create and delete indexes, write vectors'],
  ['api-tokens:edit', 'list, create and revoke tokens'],
];

function injectStyle() {
  if (document.getElementById('usage-page-style')) return;
  document.head.append(el('style', { id: 'usage-page-style' }, STYLE));
}

function listen(node, event, handler) {
  node.addEventListener(event, handler);
  return node;
}

function section(title, ...children) {
  return el('section', { class: 'panel us-section' }, el('h3', {}, title), ...children);
}

function button(label, onclick, attrs = {}) {
  return el('button', { type: 'button', ...attrs, onclick }, label);
}

/** `YYYY-MM-DD` of a UTC day, `offset` days from today. */
function utcDay(offset = 0) {
  return new Date(Date.now() + offset * 86400e3).toISOString().slice(0, 10);
}

function neurons(n) {
  const value = Number(n ?? 0);
  return value >= 100 ? Math.round(value).toLocaleString() : String(+value.toFixed(2));
}

// --- Usage -----------------------------------------------------------------------------------

function renderRateLimits(holder, state) {
  const rules = 'Requests per minute per account and model or task: Workers AI\'s defaults, '
    + 'overridden by [rpm_limits] in kiln.toml.';
  if (!state) {
    holder.replaceChildren(el('p', { class: 'us-hint' }, rules));
    return;
  }
  const windows = state.windows ?? [];
  holder.replaceChildren(
    el('p', { class: 'us-hint' }, rules, ' ', state.apply
      ? 'They apply on this server.'
      : 'They do not apply on this server (open mode without --rate-limits true), so no window is kept.'),
    !state.apply ? null : windows.length === 0
      ? el('p', { 'data-test': 'rate-limits-empty' }, 'No requests in the last minute.')
      : table([
        { key: 'key', label: 'Model or task' },
        { key: 'requests_last_minute', label: 'Requests, last 60 s' },
        { key: 'limit_per_minute', label: 'Limit per minute', render: (row) => (row.limit_per_minute ? String(row.limit_per_minute) : 'unlimited') },
        { key: 'share', label: 'Used', render: (row) => (row.limit_per_minute ? `${Math.round(100 * row.requests_last_minute / row.limit_per_minute)}%` : '—') },
      ], windows),
  );
}

function renderUsage(holder, limitsHolder) {
  const range = el('select', { 'data-test': 'usage-range' },
    ...[[7, 'Last 7 days'], [30, 'Last 30 days'], [90, 'Last 90 days']].map(([days, label]) => el('option', { value: String(days) }, label)));
  const summary = el('div', { class: 'us-facts', 'data-test': 'usage-summary' });
  const chart = el('div', { class: 'us-chart', 'data-test': 'usage-chart' });
  const rows = el('div', { 'data-test': 'usage-table' });
  const status = el('div');
  holder.replaceChildren(el('div', { class: 'us-row' }, 'Range (UTC days): ', range), status, summary, chart, rows);

  const refresh = async () => {
    const days = Number(range.value) || 7;
    const since = utcDay(-(days - 1));
    const until = utcDay(0);
    let report;
    try {
      report = await api.get(`${api.accountPath('/ai/usage')}?${new URLSearchParams({ since, until })}`);
    } catch (error) {
      status.replaceChildren();
      notice(status, error);
      return;
    }
    status.replaceChildren();
    renderRateLimits(limitsHolder, report.rate_limits);
    const free = Number(report.free_neurons_per_day ?? 0);
    const today = Number(report.neurons_today ?? 0);
    const share = free > 0 ? Math.min(1, today / free) : 0;
    const fact = (label, value) => el('div', {}, el('b', {}, value), label);
    const meter = el('div', { class: `us-meter${today > free ? ' us-over' : ''}`, title: `${neurons(today)} of ${neurons(free)}` },
      el('div', { style: `width: ${(share * 100).toFixed(1)}%` }));
    summary.replaceChildren(
      fact('plan', String(report.plan ?? '—')),
      el('div', { 'data-test': 'usage-today' }, el('b', {}, `${neurons(today)} / ${neurons(free)}`),
        `neurons today (${report.today ?? until}, UTC) of the free daily allocation`, meter,
        el('div', { class: 'us-hint' }, report.plan === 'paid'
          ? 'Paid plan: usage past the allocation is counted, never refused.'
          : 'Free plan: requests past the allocation are refused (error 3036) until midnight UTC.')),
      fact(`neurons ${since} → ${until}`, neurons(report.neurons)),
    );
    const list = report.rows ?? [];
    // Neurons per day, one stacked part per model; every day of the range has a bar.
    const byDay = new Map();
    for (let d = -(days - 1); d <= 0; d += 1) byDay.set(utcDay(d), []);
    for (const row of list) {
      if (!byDay.has(row.day)) byDay.set(row.day, []);
      byDay.get(row.day).push({ name: row.model, value: Number(row.neurons ?? 0) });
    }
    const bars = [...byDay.keys()].sort().map((day) => ({ label: day.slice(5), parts: byDay.get(day) }));
    chart.replaceChildren(list.length
      ? barChart(bars, { title: 'Neurons per day (UTC), by model', height: 220, format: neurons })
      : el('p', { class: 'us-hint' }, 'No usage in this range yet.'));
    const sorted = [...list].sort((a, b) => b.day.localeCompare(a.day) || b.neurons - a.neurons);
    rows.replaceChildren(sorted.length ? table([
      { key: 'day', label: 'Day (UTC)' },
      { key: 'model', label: 'Model' },
      { key: 'requests', label: 'Requests', render: (r) => String(r.requests ?? 0) },
      { key: 'input_tokens', label: 'Input tokens', render: (r) => String(r.input_tokens ?? 0) },
      { key: 'output_tokens', label: 'Output tokens', render: (r) => String(r.output_tokens ?? 0) },
      { key: 'neurons', label: 'Neurons', render: (r) => neurons(r.neurons) },
    ], sorted) : '');
  };
  listen(range, 'change', refresh);
  return refresh();
}

// --- Tokens ----------------------------------------------------------------------------------

async function renderTokens(holder) {
  const path = api.accountPath('/tokens');
  const status = el('div');
  const list = el('div', { 'data-test': 'tokens-table' }, 'Loading…');
  const secret = el('div');
  // The shell asked /kiln/whoami: "open" while no token is required.
  const auth = api.auth;

  const refresh = async () => {
    try {
      const tokens = await api.get(path);
      list.replaceChildren(tokens.length ? table([
        { key: 'name', label: 'Name' },
        { key: 'id', label: 'Id', render: (t) => el('code', {}, t.id) },
        { key: 'scopes', label: 'Scopes', render: (t) => (t.scopes ?? []).join(', ') },
        { key: 'created_at_ms', label: 'Created', render: (t) => (t.created_at_ms ? new Date(t.created_at_ms).toLocaleString() : '') },
        { key: 'status', label: 'Status' },
        {
          key: 'actions', label: '',
          render: (t) => (t.status === 'active' ? button('Revoke', async () => {
            if (!window.confirm(`Revoke token ${t.name}? Clients using it stop working at once.`)) return;
            try {
              await api.del(`${path}/${encodeURIComponent(t.id)}`);
              refresh();
            } catch (error) {
              notice(status, error);
            }
          }, { class: 'danger', 'data-test': 'token-revoke' }) : ''),
        },
      ], tokens) : el('p', {}, 'No API tokens yet.'));
    } catch (error) {
      list.replaceChildren();
      notice(status, error);
    }
  };

  const name = el('input', { placeholder: 'token name', required: 'required', 'data-test': 'token-name' });
  const all = el('input', { type: 'checkbox', 'data-test': 'token-scope-all' });
  all.checked = true;
  const boxes = SCOPES.map(([scope, what]) => {
    const box = el('input', { type: 'checkbox', value: scope });
    return { box, node: el('label', { title: what }, box, ` ${scope}`) };
  });
  const syncScopes = () => {
    for (const { box } of boxes) box.disabled = all.checked;
  };
  listen(all, 'change', syncScopes);
  syncScopes();
  const warning = el('p', { class: 'us-hint', 'data-test': 'token-auth-note' },
    auth === 'open'
      ? '⚠ This server runs without tokens now. If it was started in auto auth mode (the default), '
        + 'creating the first token switches it to requiring tokens: every client, this console included, '
        + 'then needs one. Keep the secret shown after creation.'
      : 'Creating the first token of a server in auto auth mode switches it to requiring tokens. '
        + 'A token never grants scopes the token creating it lacks.');
  const form = el('form', {},
    el('div', { class: 'us-row' }, name, el('button', { type: 'submit', class: 'primary', 'data-test': 'token-create' }, 'Create token')),
    el('div', { class: 'us-scopes' }, el('label', {}, all, ' all my scopes'), ...boxes.map((b) => b.node)),
    warning);
  listen(form, 'submit', async (event) => {
    event.preventDefault();
    status.replaceChildren();
    const scopes = all.checked ? ['all'] : boxes.filter((b) => b.box.checked).map((b) => b.box.value);
    if (!scopes.length) {
      notice(status, new Error('choose at least one scope'));
      return;
    }
    try {
      const created = await api.post(path, { name: name.value.trim(), scopes });
      name.value = '';
      showSecret(created);
      refresh();
    } catch (error) {
      notice(status, error);
    }
  });

  function showSecret(created) {
    const value = el('code', { 'data-test': 'token-secret' }, created.value ?? '');
    const copied = el('span', { class: 'us-hint' });
    const copy = button('Copy', async () => {
      try {
        await navigator.clipboard.writeText(created.value);
        copied.textContent = 'Copied.';
      } catch {
        // No clipboard (plain HTTP on another host): select it for Ctrl+C.
        const range = document.createRange();
        range.selectNodeContents(value);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        copied.textContent = 'Selected: press Ctrl+C.';
      }
    }, { 'data-test': 'token-copy' });
    secret.replaceChildren(el('div', { class: 'us-secret' },
      el('p', {}, el('strong', {}, `Token ${created.name} created. `), 'Copy its secret now: it is never shown again.'),
      el('div', { class: 'us-row' }, value, copy, copied),
      el('div', { class: 'us-row' },
        button('Use it in this console', () => {
          // The shell keeps the token from its header field (and reloads the page).
          const field = document.getElementById('token');
          if (!field) return;
          field.value = created.value;
          field.dispatchEvent(new Event('change'));
        }, { 'data-test': 'token-use' }),
        button('Done', () => secret.replaceChildren()))));
  }

  holder.replaceChildren(status, secret, list, el('h4', {}, 'New token'), form);
  await refresh();
}

export default {
  id: 'usage',
  title: 'Usage & tokens',
  async render(root) {
    injectStyle();
    const usage = el('div');
    const tokens = el('div');
    const limits = el('div', { 'data-test': 'rate-limits' });
    root.append(
      el('h2', {}, 'Usage'),
      section('Neurons', usage),
      section('API tokens', tokens),
      section('Rate limits', limits),
    );
    await Promise.all([renderUsage(usage, limits), renderTokens(tokens)]);
  },
};
