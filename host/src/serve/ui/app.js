// The Crosscast web UI: runs, a run's graph updating while it moves, each
// activity's details, the delivery log and the suppression lists. It reads
// only the public API (/api/v1/...), signed in with a session cookie the
// server gives for an API token (POST /ui/session). No framework, no build
// step: what the server embeds is what runs.
'use strict';

(() => {
  const main = document.getElementById('main');
  const nav = document.getElementById('nav');
  const clock = document.getElementById('clock');
  const signOutButton = document.getElementById('sign-out');

  /** How often a page asks again, in milliseconds. */
  const REFRESH_MS = 1000;

  /** Bumped on every navigation: answers for an older page are dropped. */
  let page = 0;
  let timer = null;

  /** The API said 401: the session is gone (or never was). */
  class Unauthorized extends Error {}

  /** A JSON request to the server; throws the API's `error` on failure. */
  async function api(path, options = {}) {
    const headers = { Accept: 'application/json', ...(options.headers || {}) };
    // Changes made with the session cookie must say they come from the UI
    // (a custom header no other site can send without the server's leave).
    if (options.method && options.method !== 'GET') headers['X-Crosscast-UI'] = '1';
    const r = await fetch(path, { credentials: 'same-origin', ...options, headers });
    if (r.status === 401) throw new Unauthorized();
    const body = r.status === 204 ? null : await r.json().catch(() => null);
    if (!r.ok) throw new Error(body && body.error ? body.error : `${r.status} ${r.statusText}`);
    return body;
  }

  /** An element: `attrs` are attributes (`on…` are listeners, `text` the text). */
  function el(tag, attrs = {}, ...children) {
    return build(document.createElement(tag), attrs, children);
  }

  /** An SVG element, likewise. */
  function svgEl(tag, attrs = {}, ...children) {
    return build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children);
  }

  function build(node, attrs, children) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  /** `s` cut to `max` characters, with an ellipsis when cut. */
  function shorten(s, max) {
    return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
  }

  /** An instant in milliseconds, as the CLI writes it (RFC 3339, UTC). */
  function when(ms) {
    return new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
  }

  /** A path of the API with `run` and more segments escaped. */
  function runPath(run, ...rest) {
    return ['/api/v1/runs', run, ...rest].map((p, i) => (i ? encodeURIComponent(p) : p)).join('/');
  }

  /** Replaces the page's content. */
  function show(...children) {
    main.replaceChildren(...children);
  }

  /** Runs `fn` now and every `ms` while this page is shown; a tick is
   *  skipped while the one before is still waiting for the server (a large
   *  run's status takes time to count). */
  function every(ms, fn) {
    const mine = page;
    let busy = false;
    const tick = async () => {
      if (mine !== page || busy) return;
      busy = true;
      try {
        await fn();
      } catch (e) {
        if (e instanceof Unauthorized) return signIn('Your session ended: sign in again.');
        const status = document.getElementById('status-line');
        if (status) status.textContent = `Could not refresh: ${e.message}`;
      } finally {
        busy = false;
      }
    };
    tick();
    timer = setInterval(tick, ms);
  }

  // ---- Sign-in ------------------------------------------------------------

  function signIn(message) {
    page += 1;
    clearInterval(timer);
    nav.hidden = true;
    signOutButton.hidden = true;
    clock.textContent = '';
    const input = el('input', {
      id: 'token', type: 'password', name: 'token', autocomplete: 'off', required: true,
      'aria-describedby': 'sign-in-help',
    });
    const error = el('p', { id: 'sign-in-error', class: 'error', role: 'alert', text: message || '' });
    const form = el('form', {
      id: 'sign-in', class: 'card narrow',
      onsubmit: async (ev) => {
        ev.preventDefault();
        error.textContent = '';
        try {
          await api('/ui/session', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ token: input.value }),
          });
          input.value = '';
          route();
        } catch (e) {
          error.textContent = e instanceof Unauthorized
            ? 'That token is unknown or revoked.'
            : `Could not sign in: ${e.message}`;
          input.focus();
        }
      },
    },
    el('h1', { text: 'Sign in' }),
    el('label', { for: 'token', text: 'API token' }),
    input,
    el('p', { id: 'sign-in-help', class: 'muted', text: 'Make one with: crosscast token create NAME' }),
    el('button', { type: 'submit', id: 'sign-in-button', text: 'Sign in' }),
    error);
    show(form);
    input.focus();
  }

  signOutButton.addEventListener('click', async () => {
    await api('/ui/session', { method: 'DELETE' }).catch(() => {});
    signIn('Signed out.');
  });

  // ---- Navigation ---------------------------------------------------------

  function route() {
    page += 1;
    clearInterval(timer);
    const hash = location.hash.replace(/^#/, '') || '/runs';
    const [path, query] = hash.split('?');
    const params = new URLSearchParams(query || '');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    nav.hidden = false;
    signOutButton.hidden = false;
    for (const a of nav.querySelectorAll('a')) {
      const current = hash.startsWith(a.getAttribute('href').slice(1));
      if (current) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    if (parts[0] === 'runs' && parts.length === 2) return runPage(parts[1]);
    if (parts[0] === 'runs' && parts[2] === 'deliveries') return logPage(parts[1], params);
    if (parts[0] === 'suppression') return suppressionPage(params);
    if (parts[0] === 'schedules') return schedulesPage();
    return runsPage(params);
  }

  async function tickClock() {
    const c = await api('/api/v1/clock');
    clock.textContent = `Clock: ${c.now}${c.virtual ? ' (virtual)' : ''}`;
  }

  // ---- Runs ---------------------------------------------------------------

  function runsPage(params) {
    const dry = params.get('dry') === 'true';
    const body = el('tbody');
    const table = el('table', { id: 'runs' },
      el('caption', { text: dry ? 'Dry runs (nothing sent)' : 'Runs' }),
      el('thead', {}, el('tr', {}, ...['Run', 'Workflow', 'State', 'Started', 'Sent', 'Failed',
        'Excluded', 'Cancelled'].map((h) => el('th', { scope: 'col', text: h })))),
      body);
    const toggle = el('a', {
      href: dry ? '#/runs' : '#/runs?dry=true',
      text: dry ? 'Show real runs' : 'Show dry runs',
    });
    show(el('h1', { text: 'Runs' }), el('p', {}, toggle),
      el('p', { id: 'status-line', class: 'muted', 'aria-live': 'polite' }), table);
    every(2 * REFRESH_MS, async () => {
      const [runs] = await Promise.all([api(`/api/v1/runs?dry=${dry}`), tickClock()]);
      const rows = runs.slice().reverse().map((r) => el('tr', { 'data-run': r.id },
        el('td', {}, el('a', { href: `#/runs/${encodeURIComponent(r.id)}`, text: r.id })),
        el('td', { text: r.workflow }),
        el('td', {}, badge(r.state)),
        el('td', { text: r.started_at }),
        el('td', { class: 'num', text: r.messages.sent }),
        el('td', { class: 'num', text: r.messages.failed }),
        el('td', { class: 'num', text: r.messages.excluded }),
        el('td', { class: 'num', text: r.messages.cancelled })));
      if (!rows.length) {
        rows.push(el('tr', {}, el('td', { colspan: 8, class: 'muted', text: 'No runs yet: crosscast run FILE, or POST /api/v1/runs.' })));
      }
      body.replaceChildren(...rows);
      document.getElementById('status-line').textContent = '';
    });
  }

  /** A state in words, with a symbol: never told by colour alone. */
  const SYMBOL = {
    done: '✓', waiting: '⏸', paused: '⏸', failed: '✗', running: '▶', pending: '▶',
    cancelled: '⊘', not_reached: '·',
  };

  function badge(state) {
    const words = state.replace('_', ' ');
    return el('span', { class: `badge phase-${state}`, text: `${SYMBOL[state] || ''} ${words}`.trim() });
  }

  // ---- A run --------------------------------------------------------------

  function runPage(run) {
    const title = el('h1', { id: 'run-title', text: `Run ${run}` });
    const meta = el('p', { id: 'run-meta', class: 'muted' });
    const actions = el('div', { class: 'actions', role: 'group', 'aria-label': 'Run actions' });
    const statusLine = el('p', { id: 'status-line', class: 'muted', 'aria-live': 'polite' });
    const choose = (id) => {
      graph.select(id);
      details.select(id).catch((e) => { statusLine.textContent = `Could not load ${id}: ${e.message}`; });
    };
    const graph = new GraphView(run, choose);
    const activities = el('tbody');
    const details = new Details(run);
    const buttons = {};
    for (const [action, label] of [['pause', 'Pause'], ['resume', 'Resume'], ['cancel', 'Cancel'],
      ['retry', 'Retry failed']]) {
      buttons[action] = el('button', {
        type: 'button', 'data-action': action, text: label,
        onclick: async () => {
          if (action === 'cancel' && !confirm(`Cancel run ${run}? Messages not sent yet will never be.`)) return;
          try {
            await api(runPath(run, action), { method: 'POST' });
            statusLine.textContent = `${label}: done.`;
          } catch (e) {
            statusLine.textContent = `${label}: ${e.message}`;
          }
        },
      });
      actions.append(buttons[action]);
    }
    actions.append(el('a', { class: 'button', href: `#/runs/${encodeURIComponent(run)}/deliveries`, text: 'Delivery log' }));
    show(
      el('p', {}, el('a', { href: '#/runs', text: '← Runs' })),
      title, meta, actions, statusLine,
      el('section', { class: 'graph-panel', 'aria-label': 'Graph' }, graph.root),
      el('div', { class: 'run-layout' },
        el('section', { 'aria-label': 'Activities' },
          el('h2', { text: 'Activities' }),
          el('table', { id: 'activities' },
            el('thead', {}, el('tr', {}, ...['Activity', 'Type', 'State', 'Transitions', 'Messages']
              .map((h) => el('th', { scope: 'col', text: h })))),
            activities)),
        details.root));

    every(REFRESH_MS, async () => {
      const [status, g] = await Promise.all([api(runPath(run)), api(runPath(run, 'graph')), tickClock()]);
      title.replaceChildren(`Run ${status.id}: ${status.workflow} `, badge(status.state));
      const signals = (status.signals || []).map((x) =>
        `${x.name} at ${x.at}${x.ids === undefined ? '' : ` (${x.ids} ${x.dimension}s)`}`);
      meta.textContent = `Started ${status.started_at} from ${status.file}${status.dry_run ? ' · dry run, nothing sent' : ''}` +
        (signals.length ? ` · signals: ${signals.join(', ')}` : '');
      const finished = ['done', 'cancelled'].includes(status.state);
      buttons.pause.disabled = finished || status.state === 'paused' || status.state === 'failed';
      buttons.resume.disabled = status.state !== 'paused';
      buttons.cancel.disabled = finished;
      buttons.retry.disabled = status.state !== 'failed';
      graph.update(g);
      activities.replaceChildren(...g.nodes.map((n) => activityRow(n, g, () => choose(n.id))));
      details.refresh(g);
    });
  }

  /** The activities as a table: the graph's text for keyboards and screen readers. */
  function activityRow(n, g, select) {
    const out = g.edges.filter((e) => e.from === n.id).map(edgeLabel);
    return el('tr', { 'data-activity': n.id },
      el('td', {}, el('button', { type: 'button', class: 'link', onclick: select, text: n.id })),
      el('td', { text: n.type }),
      el('td', {}, n.phase ? badge(n.phase) : '', n.state && n.phase !== n.state ? ` ${n.state}` : ''),
      el('td', { text: out.join(', ') || '—' }),
      el('td', { text: n.detail || '—' }));
  }

  function edgeLabel(e) {
    if (e.skipped) return `${e.transition} skipped`;
    return e.count === null || e.count === undefined ? e.transition : `${e.transition} ${e.count}`;
  }

  // ---- The graph ----------------------------------------------------------

  const BOX_W = 172;
  const BOX_H = 76;
  const COL_GAP = 84;
  const ROW_GAP = 30;
  const PAD = 16;

  /** Columns by longest path from the activities nothing leads to; within a
   *  column, each activity near the mean place of those leading to it. */
  function layout(g) {
    const ids = g.nodes.map((n) => n.id);
    const known = new Set(ids);
    const incoming = new Map(ids.map((id) => [id, []]));
    const outgoing = new Map(ids.map((id) => [id, []]));
    for (const e of g.edges) {
      if (!known.has(e.from) || !known.has(e.to)) continue;
      outgoing.get(e.from).push(e.to);
      incoming.get(e.to).push(e.from);
    }
    const indegree = new Map(ids.map((id) => [id, incoming.get(id).length]));
    const order = [];
    const queue = ids.filter((id) => indegree.get(id) === 0);
    while (queue.length) {
      const id = queue.shift();
      order.push(id);
      for (const to of outgoing.get(id)) {
        indegree.set(to, indegree.get(to) - 1);
        if (indegree.get(to) === 0) queue.push(to);
      }
    }
    for (const id of ids) if (!order.includes(id)) order.push(id);
    const rank = new Map();
    for (const id of order) {
      const before = incoming.get(id).filter((f) => rank.has(f)).map((f) => rank.get(f) + 1);
      rank.set(id, Math.max(0, ...before));
    }
    const columns = [];
    for (const id of ids) (columns[rank.get(id)] ||= []).push(id);
    const place = new Map();
    columns.forEach((col) => col.forEach((id, i) => place.set(id, i)));
    for (let pass = 0; pass < 2; pass += 1) {
      for (const col of columns.slice(1)) {
        const mean = (id) => {
          const from = incoming.get(id);
          return from.length ? from.reduce((s, f) => s + place.get(f), 0) / from.length : place.get(id);
        };
        col.sort((a, b) => mean(a) - mean(b) || place.get(a) - place.get(b));
        col.forEach((id, i) => place.set(id, i));
      }
    }
    const tallest = Math.max(1, ...columns.map((c) => c.length));
    const at = new Map();
    columns.forEach((col, c) => col.forEach((id, i) => at.set(id, {
      x: PAD + c * (BOX_W + COL_GAP),
      y: PAD + (i + (tallest - col.length) / 2) * (BOX_H + ROW_GAP),
    })));
    return {
      at,
      width: PAD * 2 + columns.length * BOX_W + (columns.length - 1) * COL_GAP,
      height: PAD * 2 + tallest * BOX_H + (tallest - 1) * ROW_GAP,
    };
  }

  /** A run's graph: drawn once, then its counts and states updated in place. */
  class GraphView {
    constructor(run, onSelect) {
      this.run = run;
      this.onSelect = onSelect;
      this.zoom = null;
      this.shape = '';
      this.canvas = el('div', { class: 'canvas', id: 'graph' });
      this.zoomLabel = el('span', { class: 'zoom', 'aria-live': 'polite' });
      const zoomBy = (f) => this.setZoom(this.zoom * f);
      this.root = el('div', {},
        el('div', { class: 'toolbar', role: 'group', 'aria-label': 'Zoom' },
          el('button', { type: 'button', 'aria-label': 'Zoom out', text: '−', onclick: () => zoomBy(1 / 1.25) }),
          this.zoomLabel,
          el('button', { type: 'button', 'aria-label': 'Zoom in', text: '+', onclick: () => zoomBy(1.25) }),
          el('button', { type: 'button', text: 'Fit', 'aria-label': 'Fit the whole graph', onclick: () => this.fit() }),
          el('button', { type: 'button', text: '100%', onclick: () => this.setZoom(1) })),
        this.canvas);
    }

    update(g) {
      const shape = JSON.stringify([g.nodes.map((n) => n.id), g.edges.map((e) => [e.from, e.transition, e.to])]);
      if (shape !== this.shape) {
        this.shape = shape;
        this.draw(g);
      }
      for (const n of g.nodes) this.fillNode(n);
      g.edges.forEach((e, i) => this.fillEdge(e, i));
      this.sizeLabels();
    }

    draw(g) {
      const { at, width, height } = layout(g);
      this.size = { width, height };
      this.at = at;
      const svg = svgEl('svg', {
        viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-labelledby': 'graph-title',
        xmlns: 'http://www.w3.org/2000/svg',
      },
      svgEl('title', { id: 'graph-title', text: g.title }),
      svgEl('defs', {}, svgEl('marker', {
        id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: 'auto-start-reverse',
      }, svgEl('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }))));
      const edges = svgEl('g', { class: 'edges' });
      const labels = svgEl('g', { class: 'labels' });
      const nodes = svgEl('g', { class: 'nodes' });
      // Transitions between the same two activities are spread apart.
      const seen = new Map();
      g.edges.forEach((e, i) => {
        const a = at.get(e.from);
        const b = at.get(e.to);
        if (!a || !b) return;
        const pair = `${e.from}\u0000${e.to}`;
        const nth = seen.get(pair) || 0;
        seen.set(pair, nth + 1);
        const x1 = a.x + BOX_W;
        const y1 = a.y + BOX_H / 2;
        const x2 = b.x;
        const y2 = b.y + BOX_H / 2;
        const bend = Math.max(40, (x2 - x1) / 2);
        edges.append(svgEl('path', {
          class: 'edge', 'data-edge': i, 'marker-end': 'url(#arrow)',
          d: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`,
        }));
        // The label sits on the curve at its middle (or past the source for
        // long jumps), shifted for a second transition to the same target.
        const lx = x2 - x1 > BOX_W + COL_GAP ? x1 + COL_GAP / 2 : (x1 + x2) / 2;
        const t = (lx - x1) / Math.max(1, x2 - x1);
        const ly = y1 + (y2 - y1) * (3 * t * t - 2 * t * t * t) + nth * 22;
        labels.append(svgEl('g', { class: 'edge-label', 'data-edge': i, 'data-from': e.from, 'data-transition': e.transition, 'data-to': e.to },
          svgEl('rect', { x: lx, y: ly - 10, width: 10, height: 20, rx: 4 }),
          svgEl('text', { x: lx, y: ly + 4, 'text-anchor': 'middle' })));
      });
      for (const n of g.nodes) {
        const p = at.get(n.id);
        const select = () => this.onSelect(n.id);
        nodes.append(svgEl('g', {
          class: 'node', 'data-activity': n.id, tabindex: 0, role: 'button',
          transform: `translate(${p.x} ${p.y})`,
          onclick: select,
          onkeydown: (ev) => {
            if (ev.key === 'Enter' || ev.key === ' ') {
              ev.preventDefault();
              select();
            }
          },
          onfocus: (ev) => ev.currentTarget.scrollIntoView({ block: 'nearest', inline: 'nearest' }),
        },
        svgEl('title', {}),
        svgEl('rect', { width: BOX_W, height: BOX_H, rx: 8 }),
        svgEl('text', { x: 12, y: 20, class: 'node-id' }),
        svgEl('text', { x: 12, y: 37, class: 'node-type' }),
        svgEl('text', { x: 12, y: 54, class: 'node-state' }),
        svgEl('text', { x: 12, y: 70, class: 'node-detail' })));
      }
      svg.append(edges, nodes, labels);
      this.svg = svg;
      this.canvas.replaceChildren(svg);
      // Fitted to the panel, but never so small its text cannot be read
      // (beyond that the panel scrolls).
      if (this.zoom === null) this.fit(0.75);
      else this.setZoom(this.zoom);
    }

    fillNode(n) {
      const g = this.canvas.querySelector(`g.node[data-activity="${CSS.escape(n.id)}"]`);
      if (!g) return;
      // A box is narrow: `waiting until 2026-01-12T09:00:00Z` is drawn as
      // `until 2026-01-12 09:00`, `waiting for signal approved until …` as
      // `signal approved`, whole in its title.
      const waiting = n.phase === 'waiting' && n.state;
      const until = waiting && n.state.match(/^waiting until (\d{4}-\d\d-\d\d)T(\d\d:\d\d)/);
      const signal = waiting && n.state.match(/^waiting for signal (\S+)/);
      const words = until ? `until ${until[1]} ${until[2]}` : signal ? `signal ${signal[1]}` : n.state;
      const state = words ? `${SYMBOL[n.phase] || ''} ${words}`.trim() : '';
      g.setAttribute('class', `node phase-${n.phase || 'none'}${this.selected === n.id ? ' selected' : ''}`);
      const full = [n.id, n.type, n.state, n.detail].filter(Boolean).join(', ');
      g.setAttribute('aria-label', full);
      g.querySelector('title').textContent = full;
      g.querySelector('.node-id').textContent = shorten(n.id, 21);
      g.querySelector('.node-type').textContent = shorten(n.type, 24);
      g.querySelector('.node-state').textContent = shorten(state, 25);
      g.querySelector('.node-detail').textContent = shorten(n.detail || '', 25);
    }

    fillEdge(e, i) {
      const label = this.canvas.querySelector(`g.edge-label[data-edge="${i}"]`);
      const path = this.canvas.querySelector(`path.edge[data-edge="${i}"]`);
      if (!label || !path) return;
      const text = edgeLabel(e);
      label.querySelector('text').textContent = text;
      label.setAttribute('data-count', e.count === null || e.count === undefined ? '' : e.count);
      const kind = e.skipped ? 'skipped' : e.count === null || e.count === undefined ? 'pending' : 'taken';
      label.setAttribute('class', `edge-label ${kind}`);
      path.setAttribute('class', `edge ${kind}`);
    }

    /** Each label's box fits its text. */
    sizeLabels() {
      for (const label of this.canvas.querySelectorAll('g.edge-label')) {
        const text = label.querySelector('text');
        const rect = label.querySelector('rect');
        const w = text.getComputedTextLength() + 12;
        rect.setAttribute('width', w);
        rect.setAttribute('x', Number(text.getAttribute('x')) - w / 2);
      }
    }

    setZoom(z) {
      this.zoom = Math.min(3, Math.max(0.1, z));
      if (!this.svg) return;
      this.svg.setAttribute('width', Math.round(this.size.width * this.zoom));
      this.svg.setAttribute('height', Math.round(this.size.height * this.zoom));
      this.zoomLabel.textContent = `${Math.round(this.zoom * 100)}%`;
    }

    /** The whole graph in the panel (`Fit`); when drawn first, as large as
     *  fits the panel's width but never under `least` (then it scrolls). */
    fit(least) {
      const wide = Math.max(200, this.canvas.clientWidth - 4) / this.size.width;
      if (least !== undefined) return this.setZoom(Math.max(least, Math.min(1, wide)));
      const high = (innerHeight * 0.7 - 4) / this.size.height;
      return this.setZoom(Math.min(1, wide, high));
    }

    select(id) {
      this.selected = id;
      for (const g of this.canvas.querySelectorAll('g.node')) {
        g.classList.toggle('selected', g.getAttribute('data-activity') === id);
      }
    }
  }

  // ---- An activity's details ----------------------------------------------

  class Details {
    constructor(run) {
      this.run = run;
      this.root = el('aside', { id: 'details', class: 'details card', 'aria-live': 'polite' },
        el('p', { class: 'muted', text: 'Select an activity (click it, or Tab to it and press Enter) to see its details.' }));
      this.id = null;
      this.seen = '';
      this.sample = undefined;
    }

    async select(id) {
      this.id = id;
      this.seen = '';
      this.sample = undefined;
      await this.load(true);
    }

    /** Reloads the details when the selected activity's node changed. */
    async refresh(g) {
      if (!this.id) return;
      const n = g.nodes.find((x) => x.id === this.id);
      const now = JSON.stringify(n);
      if (now === this.seen) return;
      this.seen = now;
      await this.load(this.sample === undefined);
    }

    async load(withSample) {
      const id = this.id;
      const d = await api(`${runPath(this.run, 'activities', id)}?sample=${withSample}`);
      if (id !== this.id) return;
      if (withSample) this.sample = d.sample;
      this.render(d);
    }

    render(d) {
      const s = d.status;
      const parts = [
        el('h2', { id: 'details-title', text: `${d.activity}` }),
        el('p', {}, el('span', { class: 'muted', text: `${s.type} · ` }), badge(s.state),
          s.waiting_for ? ` for signal ${s.waiting_for}` : '',
          s.waiting_until ? ` until ${s.waiting_until}` : ''),
      ];
      if (s.state === 'waiting' && s.waiting_for) {
        // The whole population goes on; naming records is for the CLI and
        // the API (`--ids`).
        const said = el('span', { class: 'muted', 'aria-live': 'polite' });
        const name = s.waiting_for;
        parts.push(el('p', {},
          el('button', {
            type: 'button', 'data-signal': name, text: `Send signal ${name}`,
            onclick: async () => {
              try {
                await api(runPath(this.run, 'signals', name), { method: 'POST' });
                said.textContent = ` Signal ${name} sent.`;
              } catch (e) {
                said.textContent = ` Signal ${name}: ${e.message}`;
              }
            },
          }), said));
      }
      if (s.errors && s.errors.length) {
        parts.push(el('h3', { text: 'Errors' }), el('ul', { class: 'errors' }, ...s.errors.map((e) => el('li', { text: e }))));
      }
      const transitions = Object.entries(s.transitions || {});
      if (transitions.length) {
        parts.push(el('h3', { text: 'Transitions' }), el('ul', {}, ...transitions.map(([t, n]) =>
          el('li', { text: (s.skipped || []).includes(t) ? `${t}: skipped` : `${t}: ${n}` }))));
      }
      if (s.deliveries) {
        const log = (state) => `#/runs/${encodeURIComponent(this.run)}/deliveries?activity=${encodeURIComponent(d.activity)}${state ? `&state=${state}` : ''}`;
        const rows = [['sent', 'Sent'], ['failed', 'Failed'], ['excluded', 'Excluded'], ['in_flight', 'In flight'],
          ['retrying', 'Retrying'], ['cancelled', 'Cancelled']].map(([k, label]) => el('tr', {},
          el('th', { scope: 'row' }, el('a', { href: log(k), text: label })),
          el('td', { class: 'num', 'data-count': k, text: s.deliveries[k] })));
        parts.push(el('h3', { text: 'Messages' }), el('table', { class: 'summary' }, el('tbody', {}, ...rows)),
          el('p', {}, el('a', { href: log(''), text: 'This activity’s delivery log' })));
        parts.push(reasons('Exclusions by reason', d.exclusions), reasons('Failures by reason', d.failures));
        parts.push(el('h3', { text: 'Sample message' }), sampleView(this.sample));
      }
      this.root.replaceChildren(...parts.filter(Boolean));
    }
  }

  function reasons(title, list) {
    if (!list || !list.length) return null;
    return el('div', {}, el('h3', { text: title }), el('table', { class: 'reasons' },
      el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Reason' }), el('th', { scope: 'col', text: 'Messages' }))),
      el('tbody', {}, ...list.map((r) => el('tr', {}, el('td', { text: r.reason }), el('td', { class: 'num', text: r.count }))))));
  }

  /** A message as it would leave: an email's headers, text and HTML (drawn
   *  in a sandboxed frame: no script, no network), or an HTTP request. */
  function sampleView(m) {
    if (m === undefined) return el('p', { class: 'muted', text: 'Building…' });
    if (m === null) return el('p', { class: 'muted', text: 'None of the first recipients would get a message.' });
    if (m.error) return el('p', { class: 'error', text: `Could not build one: ${m.error}` });
    const note = el('p', { class: 'muted', text: 'Built now for one of its recipients; nothing is sent.' });
    if (m.subject !== undefined) {
      const head = el('dl', { class: 'message-head' },
        ...[['From', m.from], ['To', m.to], ['Reply-To', m.reply_to], ['Subject', m.subject]]
          .filter(([, v]) => v).flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
      const body = [];
      if (m.html) {
        const frame = el('iframe', { class: 'message-html', sandbox: '', title: 'The message’s HTML part', referrerpolicy: 'no-referrer' });
        frame.srcdoc = m.html;
        body.push(frame);
      }
      if (m.text) body.push(el('details', { open: !m.html }, el('summary', { text: 'Text part' }), el('pre', { text: m.text })));
      return el('div', { class: 'message', id: 'sample' }, note, head, ...body);
    }
    let bodyText = m.body || '';
    try {
      bodyText = JSON.stringify(JSON.parse(bodyText), null, 2);
    } catch (_) { /* not JSON: shown as it is */ }
    return el('div', { class: 'message', id: 'sample' }, note,
      el('p', {}, el('code', { text: `${m.method} ${m.path}` }), m.recipient ? ` to ${m.recipient}` : ''),
      el('pre', { text: (m.headers || []).map((h) => (Array.isArray(h) ? h.join(': ') : JSON.stringify(h))).join('\n') }),
      el('pre', { text: bodyText }));
  }

  // ---- The delivery log ---------------------------------------------------

  const STATES = ['sent', 'failed', 'excluded', 'retrying', 'in_flight', 'cancelled'];
  const CAUSES = ['policy', 'account', 'credentials', 'certificate', 'connect', 'timeout', 'protocol', 'plugin', 'provider'];

  async function logPage(run, params) {
    const mine = page;
    const status = await api(runPath(run)).catch((e) => e);
    if (mine !== page) return;
    if (status instanceof Unauthorized) return signIn();
    const deliveries = status instanceof Error ? [] : Object.entries(status.activities)
      .filter(([, a]) => a.deliveries).map(([id]) => id);
    const select = (name, label, options, words = (o) => o) => el('label', {}, label, el('select', { name },
      el('option', { value: '', text: 'any' }),
      ...options.map((o) => el('option', { value: o, text: words(o), selected: params.get(name) === o }))));
    const text = (name, label) => el('label', {}, label, el('input', { name, value: params.get(name) || '' }));
    const form = el('form', {
      id: 'log-filters', class: 'filters',
      onsubmit: (ev) => {
        ev.preventDefault();
        const q = new URLSearchParams();
        for (const [k, v] of new FormData(ev.currentTarget)) if (v) q.set(k, v);
        location.hash = `#/runs/${encodeURIComponent(run)}/deliveries?${q}`;
      },
    },
    select('activity', 'Activity', deliveries), select('state', 'State', STATES, (o) => o.replace('_', ' ')),
    select('cause', 'Cause', CAUSES),
    text('to', 'To'), text('id', 'Record id'), text('reason', 'Reason contains'),
    el('label', {}, 'At most', el('select', { name: 'limit' }, ...['100', '500', '2000'].map((n) =>
      el('option', { value: n, text: n, selected: (params.get('limit') || '100') === n })))),
    el('button', { type: 'submit', text: 'Filter' }));
    const body = el('tbody');
    const count = el('p', { id: 'log-count', class: 'muted', 'aria-live': 'polite' });
    show(el('p', {}, el('a', { href: `#/runs/${encodeURIComponent(run)}`, text: `← Run ${run}` })),
      el('h1', { text: `Delivery log of run ${run}` }), form, count,
      el('p', { id: 'status-line', class: 'muted' }),
      el('table', { id: 'log' }, el('thead', {}, el('tr', {}, ...['Activity', 'Record', 'To', 'State', 'Reason', 'Cause', 'At', 'Attempts']
        .map((h) => el('th', { scope: 'col', text: h })))), body));
    const q = new URLSearchParams(params);
    if (!q.get('limit')) q.set('limit', '100');
    every(5 * REFRESH_MS, async () => {
      const entries = await api(`${runPath(run, 'deliveries')}?${q}`);
      count.textContent = `${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}${entries.length >= Number(q.get('limit')) ? ` (the first ${q.get('limit')})` : ''}`;
      body.replaceChildren(...entries.map((e) => el('tr', {},
        el('td', { text: e.activity }), el('td', { text: e.id || `#${e.target}` }), el('td', { text: e.to || '' }),
        el('td', {}, badge(e.state === 'intent' ? 'in_flight' : e.state)), el('td', { text: e.reason || '' }),
        el('td', { text: e.cause || '' }), el('td', { class: 'when', text: when(e.at) }),
        el('td', { class: 'num', text: e.attempts }))));
    });
  }

  // ---- Schedules ----------------------------------------------------------

  function schedulesPage() {
    const body = el('tbody');
    show(el('h1', { text: 'Schedules' }),
      el('p', { class: 'muted', text: 'Workflows whose runs the server starts when due (crosscast schedule add FILE).' }),
      el('p', { id: 'status-line', class: 'muted' }),
      el('table', { id: 'schedules' }, el('thead', {}, el('tr', {}, ...['Schedule', 'Workflow', 'When', 'Time zone',
        'Next run', 'Runs', 'Skipped'].map((h) => el('th', { scope: 'col', text: h })))), body));
    every(2 * REFRESH_MS, async () => {
      const [schedules] = await Promise.all([api('/api/v1/schedules'), tickClock()]);
      const rows = schedules.map((s) => el('tr', { 'data-schedule': s.id },
        el('td', { text: s.id }), el('td', { text: s.workflow }),
        el('td', {}, el('code', { text: s.cron }), s.overlap ? ' (runs may overlap)' : ''),
        el('td', { text: s.timezone }),
        el('td', { class: 'when', text: s.next || 'ended' }),
        el('td', {}, ...s.runs.slice(-5).flatMap((r, i) => [i ? ', ' : '', el('a', { href: `#/runs/${encodeURIComponent(r)}`, text: r })]),
          s.runs.length > 5 ? ` (${s.runs.length} in all)` : ''),
        el('td', { class: 'num', text: s.skipped })));
      if (!rows.length) rows.push(el('tr', {}, el('td', { colspan: 7, class: 'muted', text: 'No schedules.' })));
      body.replaceChildren(...rows);
    });
  }

  // ---- Suppression lists --------------------------------------------------

  function suppressionPage(params) {
    const list = params.get('list') || '';
    const body = el('tbody');
    const form = el('form', {
      class: 'filters',
      onsubmit: (ev) => {
        ev.preventDefault();
        const v = new FormData(ev.currentTarget).get('list');
        location.hash = v ? `#/suppression?list=${encodeURIComponent(v)}` : '#/suppression';
      },
    }, el('label', {}, 'List', el('input', { name: 'list', value: list, placeholder: 'every list' })),
    el('button', { type: 'submit', text: 'Show' }));
    show(el('h1', { text: 'Suppression lists' }),
      el('p', { class: 'muted', text: 'Addresses no delivery sends to: quarantined after hard failures, or on a denylist (unsubscribes, imports, crosscast denylist add).' }),
      form, el('p', { id: 'status-line', class: 'muted' }),
      el('table', { id: 'suppression' }, el('thead', {}, el('tr', {}, ...['List', 'Address', 'Kind', 'Reason', 'Source', 'Since']
        .map((h) => el('th', { scope: 'col', text: h })))), body));
    every(5 * REFRESH_MS, async () => {
      const entries = await api(`/api/v1/suppression${list ? `?list=${encodeURIComponent(list)}` : ''}`);
      const rows = entries.map((e) => el('tr', {},
        el('td', { text: e.list }), el('td', { text: e.address }), el('td', { text: e.kind }),
        el('td', { text: e.reason }), el('td', { text: e.source }), el('td', { class: 'when', text: when(e.at) })));
      if (!rows.length) rows.push(el('tr', {}, el('td', { colspan: 6, class: 'muted', text: 'Nobody is suppressed.' })));
      body.replaceChildren(...rows);
    });
  }

  window.addEventListener('hashchange', route);
  // Signed in already (a cookie from before) or not: the API says.
  api('/api/v1/clock').then(route, (e) => signIn(e instanceof Unauthorized ? '' : e.message));
})();
