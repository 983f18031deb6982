// Vectorize: the account's indexes, one index's info and metadata indexes, and a query box that
// embeds text with a model of the index's width (or takes a raw vector). Routes:
// crates/kiln-http/src/vectorize/{mod,rest}.rs.

import { api, el, table, notice } from '../app.js';

const STYLE = `
.vz-form { display: grid; grid-template-columns: max-content 1fr; gap: 6px 10px; align-items: center; max-width: 640px; }
.vz-form > input, .vz-form > select, .vz-form > button { justify-self: start; }
.vz-hint { font-size: 0.85em; opacity: 0.7; }
.vz-section { margin: 0 0 16px; }
.vz-facts { display: flex; flex-wrap: wrap; gap: 18px; }
.vz-facts b { display: block; font-size: 1.2em; }
.vz-query textarea { width: 100%; min-height: 4em; font: inherit; box-sizing: border-box; }
.vz-row { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; margin: 6px 0; }
.vz-meta { white-space: pre-wrap; word-break: break-word; font-size: 0.85em; margin: 0; }
`;

// The presets Vectorize knows (crates/kiln-vectorize/src/config.rs); Kiln gives a preset index
// the width of the local model serving that id.
const PRESETS = [
  '@cf/baai/bge-small-en-v1.5', '@cf/baai/bge-base-en-v1.5', '@cf/baai/bge-large-en-v1.5',
  'openai/text-embedding-ada-002', 'cohere/embed-multilingual-v2.0',
];
const METRICS = ['cosine', 'euclidean', 'dot-product'];
const EMBEDDINGS = 'Text Embeddings';

function injectStyle() {
  if (document.getElementById('vectorize-page-style')) return;
  document.head.append(el('style', { id: 'vectorize-page-style' }, STYLE));
}

const enc = encodeURIComponent;
const indexes = () => api.accountPath('/vectorize/v2/indexes');

function when(text) {
  if (!text) return '';
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? String(text) : date.toLocaleString();
}

function section(title, ...children) {
  return el('section', { class: 'panel vz-section' }, el('h3', {}, title), ...children);
}

function button(label, onclick, attrs = {}) {
  return el('button', { type: 'button', ...attrs, onclick }, label);
}

function listen(node, event, handler) {
  node.addEventListener(event, handler);
  return node;
}

// --- Index list ------------------------------------------------------------------------------

async function renderList(root) {
  root.append(el('h2', {}, 'Vectorize'));
  const status = el('div');
  const holder = el('div', { 'data-test': 'vector-indexes' }, 'Loading…');
  root.append(status, section('Indexes', holder));

  const refresh = async () => {
    status.replaceChildren();
    try {
      const list = await api.get(indexes());
      if (!list.length) {
        holder.replaceChildren(el('p', {}, 'No indexes yet: create one below.'));
        return;
      }
      holder.replaceChildren(table([
        { key: 'name', label: 'Index', render: (i) => el('a', { href: `#/vectorize?index=${enc(i.name)}`, 'data-test': 'vector-index-link' }, i.name) },
        { key: 'dimensions', label: 'Dimensions', render: (i) => String(i.config?.dimensions ?? '') },
        { key: 'metric', label: 'Metric', render: (i) => i.config?.metric ?? '' },
        { key: 'description', label: 'Description', render: (i) => i.description ?? '' },
        { key: 'created_on', label: 'Created', render: (i) => when(i.created_on) },
        {
          key: 'actions', label: '',
          render: (i) => button('Delete', async () => {
            if (!window.confirm(`Delete index ${i.name} and all its vectors?`)) return;
            try {
              await api.del(`${indexes()}/${enc(i.name)}`);
              refresh();
            } catch (error) {
              notice(status, error);
            }
          }, { class: 'danger', 'data-test': 'vector-index-delete' }),
        },
      ], list));
    } catch (error) {
      holder.replaceChildren();
      notice(status, error);
    }
  };

  const name = el('input', { id: 'vz-name', placeholder: 'docs', required: 'required', 'data-test': 'vector-new-name' });
  const description = el('input', { id: 'vz-description', placeholder: 'optional' });
  const mode = el('select', { id: 'vz-mode' },
    el('option', { value: 'dimensions' }, 'Dimensions and metric'),
    el('option', { value: 'preset' }, 'Preset (an embedding model)'));
  const dimensions = el('input', { id: 'vz-dimensions', type: 'number', min: '1', max: '1536', value: '384', 'data-test': 'vector-new-dimensions' });
  const metric = el('select', { id: 'vz-metric' }, ...METRICS.map((m) => el('option', { value: m }, m)));
  const preset = el('select', { id: 'vz-preset' }, ...PRESETS.map((p) => el('option', { value: p }, p)));
  const dimRow = [el('label', { for: 'vz-dimensions' }, 'Dimensions'), dimensions, el('label', { for: 'vz-metric' }, 'Metric'), metric];
  const presetRow = [el('label', { for: 'vz-preset' }, 'Preset'), preset, el('span'),
    el('span', { class: 'vz-hint' }, 'The index takes the width of the model that serves this id here (and cosine).')];
  const sync = () => {
    for (const node of dimRow) node.hidden = mode.value !== 'dimensions';
    for (const node of presetRow) node.hidden = mode.value !== 'preset';
  };
  listen(mode, 'change', sync);
  const createStatus = el('div');
  const form = el('form', { class: 'vz-form' },
    el('label', { for: 'vz-name' }, 'Name'), name,
    el('label', { for: 'vz-description' }, 'Description'), description,
    el('label', { for: 'vz-mode' }, 'Define by'), mode,
    ...dimRow, ...presetRow,
    el('span'), el('button', { type: 'submit', class: 'primary', 'data-test': 'vector-create' }, 'Create index'));
  listen(form, 'submit', async (event) => {
    event.preventDefault();
    createStatus.replaceChildren();
    const config = mode.value === 'preset'
      ? { preset: preset.value }
      : { dimensions: Number(dimensions.value), metric: metric.value };
    const body = { name: name.value.trim(), config };
    if (description.value.trim()) body.description = description.value.trim();
    try {
      const created = await api.post(indexes(), body);
      location.hash = `#/vectorize?index=${enc(created.name ?? body.name)}`;
    } catch (error) {
      notice(createStatus, error);
    }
  });
  sync();
  root.append(section('New index', createStatus, form));
  await refresh();
}

// --- One index -------------------------------------------------------------------------------

async function renderIndex(root, name) {
  const path = `${indexes()}/${enc(name)}`;
  root.append(el('p', {}, el('a', { href: '#/vectorize' }, '← All indexes')), el('h2', {}, `Index ${name}`));
  const status = el('div');
  root.append(status);
  let index;
  try {
    index = await api.get(path);
  } catch (error) {
    notice(status, error);
    return;
  }
  const facts = el('div', { class: 'vz-facts', 'data-test': 'vector-info' });
  const refreshInfo = async () => {
    try {
      const info = await api.get(`${path}/info`);
      const fact = (label, value) => el('div', {}, el('b', {}, String(value ?? '—')), label);
      facts.replaceChildren(
        fact('vectors', info.vectorCount),
        fact('dimensions', info.dimensions ?? index.config?.dimensions),
        fact('metric', index.config?.metric),
        fact('last mutation applied', info.processedUpToDatetime ? when(info.processedUpToDatetime) : 'none'),
        fact('created', when(index.created_on)),
      );
    } catch (error) {
      notice(status, error);
    }
  };
  const description = index.description ? el('p', {}, index.description) : null;
  const metadata = el('div');
  const query = el('div', { class: 'vz-query' });
  if (description) root.append(description);
  root.append(section('Info', facts, el('div', { class: 'vz-row' }, button('Refresh', refreshInfo))),
    section('Query', query), section('Metadata indexes', metadata));
  renderQuery(query, path, index);
  renderMetadata(metadata, path);
  await refreshInfo();
}

function renderMetadata(holder, path) {
  const status = el('div');
  const list = el('div', { 'data-test': 'vector-metadata-indexes' });
  const refresh = async () => {
    try {
      const { metadataIndexes = [] } = await api.get(`${path}/metadata_index/list`);
      list.replaceChildren(metadataIndexes.length
        ? table([
          { key: 'propertyName', label: 'Property' },
          { key: 'indexType', label: 'Type' },
          {
            key: 'actions', label: '',
            render: (m) => button('Delete', async () => {
              try {
                await api.post(`${path}/metadata_index/delete`, { propertyName: m.propertyName });
                setTimeout(refresh, 300);
              } catch (error) {
                notice(status, error);
              }
            }),
          },
        ], metadataIndexes)
        : el('p', { class: 'vz-hint' }, 'No metadata indexes: queries can filter only on indexed properties.'));
    } catch (error) {
      notice(status, error);
    }
  };
  const property = el('input', { placeholder: 'property name', 'data-test': 'vector-metadata-property' });
  const type = el('select', {}, ...['string', 'number', 'boolean'].map((t) => el('option', { value: t }, t)));
  const form = el('form', { class: 'vz-row' }, property, type, el('button', { type: 'submit' }, 'Create metadata index'));
  listen(form, 'submit', async (event) => {
    event.preventDefault();
    status.replaceChildren();
    try {
      await api.post(`${path}/metadata_index/create`, { propertyName: property.value.trim(), indexType: type.value });
      property.value = '';
      // The change is a mutation: applied shortly after it is acknowledged.
      setTimeout(refresh, 300);
    } catch (error) {
      notice(status, error);
    }
  });
  holder.replaceChildren(status, list, form);
  refresh();
}

// --- Embedding models --------------------------------------------------------------------------

const widths = new Map(); // catalog id → width of its vectors here, once seen

/** Embeddings ids this server serves, best candidates for `dimensions` first. */
async function embeddingModels(dimensions) {
  const candidates = [];
  try {
    const query = new URLSearchParams({ task: EMBEDDINGS, per_page: '100' });
    const found = await api.get(`${api.accountPath('/ai/models/search')}?${query}`);
    for (const entry of found) {
      if (!entry?.kiln?.installed) continue;
      const width = entry.kiln.output_dimensions ?? widths.get(entry.name);
      candidates.push({ id: entry.name, servedBy: entry.kiln.served_by, width });
    }
  } catch {
    // Fall back to the installed models below.
  }
  if (!candidates.length) {
    try {
      const { models = [] } = await api.get('/kiln/models');
      for (const model of models) {
        if (model.task !== EMBEDDINGS) continue;
        for (const id of model.serves?.length ? model.serves : [model.name]) {
          candidates.push({ id, servedBy: model.name, width: widths.get(id) });
        }
      }
    } catch {
      // Nothing more to offer: raw vectors still work.
    }
  }
  const rank = (c) => (c.width === dimensions ? 0 : 1) + (c.id === '@cf/baai/bge-small-en-v1.5' ? 0 : 0.5);
  const ranked = candidates
    .filter((c) => c.width === undefined || c.width === null || c.width === dimensions)
    .sort((a, b) => rank(a) - rank(b) || a.id.localeCompare(b.id));
  // Many ids share one local model: offer each local model once, under its best id.
  const seen = new Set();
  return ranked.filter((c) => {
    const key = c.servedBy ?? c.id;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** The text's vector from `model`: `POST …/ai/run/{model}` with `{text: [text]}`. */
async function embed(model, text) {
  const result = await api.post(api.accountPath(`/ai/run/${model}`), { text: [text] });
  const vector = result?.data?.[0] ?? result?.response?.[0];
  if (!Array.isArray(vector)) throw new Error(`${model} answered no vector`);
  widths.set(model, vector.length);
  return vector;
}

// --- Query -----------------------------------------------------------------------------------

function renderQuery(holder, path, index) {
  const dimensions = Number(index.config?.dimensions);
  const mode = el('select', { 'data-test': 'vector-query-mode' },
    el('option', { value: 'text' }, 'Text (embedded here)'), el('option', { value: 'vector' }, 'Raw vector (JSON numbers)'));
  const model = el('select', { 'data-test': 'vector-query-model' }, el('option', { value: '' }, 'Finding embedding models…'));
  const input = el('textarea', { 'data-test': 'vector-query-input', placeholder: 'What to look for…' });
  const topK = el('input', { type: 'number', min: '1', max: '100', value: '5', size: '4', 'data-test': 'vector-query-topk' });
  const namespace = el('input', { placeholder: 'namespace (optional)', size: '16' });
  const filter = el('input', { placeholder: 'filter JSON, e.g. {"kind": "doc"} (optional)', size: '36' });
  const run = el('button', { type: 'submit', class: 'primary', 'data-test': 'vector-query-run' }, 'Search');
  const status = el('div');
  const used = el('p', { class: 'vz-hint', 'data-test': 'vector-query-used' });
  const results = el('div');
  const modelLabel = el('label', {}, 'Model ', model);
  const sync = () => {
    modelLabel.hidden = mode.value !== 'text';
    input.placeholder = mode.value === 'text' ? 'What to look for…' : `[${dimensions} numbers, e.g. 0.1, -0.2, …]`;
  };
  listen(mode, 'change', sync);
  sync();

  embeddingModels(dimensions).then((models) => {
    if (!models.length) {
      model.replaceChildren(el('option', { value: '' }, `no installed embedding model gives ${dimensions} dimensions`));
      return;
    }
    model.replaceChildren(...models.map((m) => el('option', { value: m.id },
      `${m.id}${m.servedBy && m.servedBy !== m.id ? ` (${m.servedBy})` : ''}${m.width ? ` · ${m.width}-d` : ''}`)));
  });

  const form = el('form', {},
    el('div', { class: 'vz-row' }, el('label', {}, 'Query by ', mode), modelLabel),
    input,
    el('div', { class: 'vz-row' }, el('label', {}, 'topK ', topK), namespace, filter, run));
  listen(form, 'submit', async (event) => {
    event.preventDefault();
    status.replaceChildren();
    used.textContent = '';
    results.replaceChildren(el('p', {}, 'Searching…'));
    run.disabled = true;
    try {
      let vector;
      if (mode.value === 'vector') {
        vector = JSON.parse(input.value.trim().startsWith('[') ? input.value : `[${input.value}]`);
        if (!Array.isArray(vector) || !vector.every((n) => typeof n === 'number')) {
          throw new Error('a raw vector is a JSON array of numbers');
        }
        used.textContent = `Raw vector of ${vector.length} numbers`;
      } else {
        const text = input.value.trim();
        if (!text) throw new Error('type something to search for');
        // The chosen model first, then any other that may give the index's width.
        const tried = model.value ? [model.value] : [];
        for (const m of await embeddingModels(dimensions)) if (!tried.includes(m.id)) tried.push(m.id);
        if (!tried.length) throw new Error(`no installed embedding model gives ${dimensions}-dimensional vectors: use a raw vector`);
        let failure = null;
        for (const id of tried) {
          let candidate;
          try {
            candidate = await embed(id, text);
          } catch (error) {
            failure = error;
            continue;
          }
          if (candidate.length === dimensions) {
            vector = candidate;
            used.textContent = `Embedded with ${id} (${candidate.length} dimensions)`;
            break;
          }
        }
        if (!vector && failure && tried.length === 1) throw failure;
        if (!vector) {
          throw new Error(`no embedding model gave ${dimensions}-dimensional vectors (tried ${tried.join(', ')}`
            + `${failure ? `; ${failure.message}` : ''}): use a raw vector`);
        }
      }
      if (vector.length !== dimensions) throw new Error(`the index takes ${dimensions} dimensions, the vector has ${vector.length}`);
      const body = {
        vector,
        topK: Math.max(1, Math.min(100, Number(topK.value) || 5)),
        returnMetadata: 'all',
        returnValues: false,
      };
      if (body.topK > 50) body.returnMetadata = 'indexed';
      if (namespace.value.trim()) body.namespace = namespace.value.trim();
      if (filter.value.trim()) body.filter = JSON.parse(filter.value);
      const answer = await api.post(`${path}/query`, body);
      showMatches(answer.matches ?? []);
    } catch (error) {
      results.replaceChildren();
      notice(status, error);
    } finally {
      run.disabled = false;
    }
  });

  function showMatches(matches) {
    if (!matches.length) {
      results.replaceChildren(el('p', { 'data-test': 'vector-matches' }, 'No matches.'));
      return;
    }
    const rendered = table([
      { key: 'rank', label: '#', render: (m) => String(m.rank) },
      { key: 'id', label: 'Id', render: (m) => el('code', { 'data-test': 'vector-match-id' }, m.id) },
      { key: 'score', label: 'Score', render: (m) => (typeof m.score === 'number' ? m.score.toFixed(4) : String(m.score ?? '')) },
      {
        key: 'metadata', label: 'Metadata',
        render: (m) => (m.metadata ? el('pre', { class: 'vz-meta', 'data-test': 'vector-match-metadata' }, JSON.stringify(m.metadata, null, 2)) : ''),
      },
      { key: 'namespace', label: 'Namespace', render: (m) => m.namespace ?? '' },
    ], matches.map((m, i) => ({ ...m, rank: i + 1 })));
    rendered.setAttribute('data-test', 'vector-matches');
    rendered.querySelectorAll('tbody tr').forEach((row) => row.setAttribute('data-test', 'vector-match'));
    results.replaceChildren(rendered);
  }

  holder.replaceChildren(form, status, used, results);
}

export default {
  id: 'vectorize',
  title: 'Vectorize',
  async render(root, params = {}) {
    injectStyle();
    if (params.index) await renderIndex(root, params.index);
    else await renderList(root);
  },
};
