// The page-group network (plain SVG, no library) and the recommendation panel.
// Data: GET /api/network, /api/policies, /api/pages; POST /api/recommend, /api/path.
"use strict";
(function () {
  const app = document.getElementById("app");
  if (!app) return;
  const run = app.dataset.run;
  const NS = "http://www.w3.org/2000/svg"; // the SVG namespace name, not a download
  const W = 900, H = 620, MARGIN = 60;
  // viridis stops: readable on white, ordered from low to high page value
  const RAMP = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];
  // the layout is O(groups² × iterations) on the main thread: 1,000 groups took 2.2 s and
  // 2,000 took 8.3 s, so above MAX_GROUPS only the most viewed are drawn (the rest are listed)
  const MAX_GROUPS = 150, MAX_LABELS = 60, PAGE_LIST = 50;
  // recommendations asked per policy: 3, or fewer on a site with fewer pages to recommend
  const K = Math.max(1, parseInt(app.dataset.k, 10) || 3);
  // the run's reward, in words ("page value", "seconds on the page", ...): what the expected
  // values and the path's sum are in (a page's GA page value is another thing)
  const REWARD = app.dataset.rewardName || "reward";
  const state = { net: null, policies: [], pathPolicy: app.dataset.defaultPolicy, group: null, page: null };

  // ---- helpers --------------------------------------------------------------------------------

  function api(path, body) {
    const opts = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    };
    return fetch(path, opts).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) throw new Error(j.error || r.statusText);
        return j;
      });
    });
  }
  const q = encodeURIComponent;
  function svg(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(e);
    return e;
  }
  // HTML built with textContent only: page names come from data and are never parsed as HTML
  function h(tag, attrs) {
    const e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]);
    });
    for (let i = 2; i < arguments.length; i++) {
      const c = arguments[i];
      if (c !== null && c !== undefined) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return e;
  }
  // long paths: the end says most ("…/bags/backpacks"); the full path is the tooltip
  const short = function (page) { return page.length > 44 ? "…" + page.slice(-43) : page; };
  // a data string inside other text: a first-strong isolate, so that bidi controls in it
  // (U+202E...) cannot reorder the text around it (elements holding only data are isolated
  // by the stylesheet: unicode-bidi: isolate)
  const iso = function (text) { return "\u2068" + text + "\u2069"; };
  // probabilities: 1 decimal from 1 %, 2 significant digits below (0.035 %), then 3.5e-4 %
  function pct(x) {
    if (x === null || x === undefined) return "–";
    const v = 100 * x, a = Math.abs(v);
    if (a === 0) return "0 %";
    if (a >= 1) return v.toFixed(1) + " %";
    if (a >= 0.01) return v.toPrecision(2) + " %";
    return v.toExponential(1) + " %";
  }
  const num = function (x) { return x === null || x === undefined ? "–" : x.toFixed(2); };
  const count = function (n) { return Number(n).toLocaleString("en-US"); };

  function colour(t) {
    const x = Math.max(0, Math.min(1, t)) * (RAMP.length - 1);
    const i = Math.min(Math.floor(x), RAMP.length - 2), f = x - i;
    const a = parseInt(RAMP[i].slice(1), 16), b = parseInt(RAMP[i + 1].slice(1), 16);
    const ch = function (s) { return Math.round(((a >> s) & 255) * (1 - f) + ((b >> s) & 255) * f); };
    return "rgb(" + ch(16) + "," + ch(8) + "," + ch(0) + ")";
  }

  // ---- layout: Fruchterman-Reingold, deterministic (nodes start on a circle by traffic) ---------

  function layout(nodes, edges) {
    const n = nodes.length;
    const order = nodes.map(function (d, i) { return i; })
      .sort(function (a, b) { return nodes[b].views - nodes[a].views || a - b; });
    const pos = new Array(n);
    order.forEach(function (node, rank) {
      const angle = 2 * Math.PI * rank / n;
      pos[node] = { x: 250 * Math.cos(angle), y: 250 * Math.sin(angle) };
    });
    const weight = {};
    edges.forEach(function (e) {
      const key = Math.min(e.source, e.target) + "," + Math.max(e.source, e.target);
      weight[key] = (weight[key] || 0) + e.probability;
    });
    const pairs = Object.keys(weight).map(function (k) {
      const p = k.split(","); return [+p[0], +p[1], weight[k]];
    });
    const k = Math.sqrt((W * H) / Math.max(n, 1)) * 0.55;
    let temp = 80;
    for (let it = 0; it < 400; it++) {
      const dx = new Float64Array(n), dy = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        for (let j = i + 1; j < n; j++) {
          let x = pos[i].x - pos[j].x, y = pos[i].y - pos[j].y;
          const d2 = Math.max(x * x + y * y, 1), f = (k * k) / d2;
          dx[i] += x * f; dy[i] += y * f; dx[j] -= x * f; dy[j] -= y * f;
        }
      }
      pairs.forEach(function (p) {
        const i = p[0], j = p[1];
        const x = pos[i].x - pos[j].x, y = pos[i].y - pos[j].y;
        const d = Math.sqrt(x * x + y * y) || 1, f = (d / k) * (0.3 + 3 * p[2]);
        dx[i] -= x * f; dy[i] -= y * f; dx[j] += x * f; dy[j] += y * f;
      });
      for (let i = 0; i < n; i++) {
        dx[i] -= 0.05 * pos[i].x; dy[i] -= 0.05 * pos[i].y; // gravity keeps loose groups near
        const d = Math.sqrt(dx[i] * dx[i] + dy[i] * dy[i]) || 1, step = Math.min(d, temp);
        pos[i].x += (dx[i] / d) * step; pos[i].y += (dy[i] / d) * step;
      }
      temp = Math.max(temp * 0.985, 0.5);
    }
    const xs = pos.map(function (p) { return p.x; }), ys = pos.map(function (p) { return p.y; });
    const x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    const y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    const sx = (W - 2 * MARGIN) / Math.max(x1 - x0, 1), sy = (H - 2 * MARGIN) / Math.max(y1 - y0, 1);
    return pos.map(function (p) {
      return { x: MARGIN + (p.x - x0) * sx, y: MARGIN + (p.y - y0) * sy };
    });
  }

  // ---- drawing -----------------------------------------------------------------------------------

  // the groups drawn: all, or the MAX_GROUPS most viewed (ties: the lower id)
  function drawnGroups(nodes) {
    if (nodes.length <= MAX_GROUPS) return nodes.map(function (d, i) { return i; });
    return nodes.map(function (d, i) { return i; })
      .sort(function (a, b) { return nodes[b].views - nodes[a].views || a - b; })
      .slice(0, MAX_GROUPS).sort(function (a, b) { return a - b; });
  }

  // above MAX_GROUPS: say how many groups are hidden, and list them all to open any
  function groupNotice(net, shown) {
    const old = document.getElementById("group-notice");
    if (old) old.remove();
    const nodes = net.nodes;
    if (shown.length === nodes.length) return;
    const total = nodes.reduce(function (s, d) { return s + d.views; }, 0);
    const drawn = shown.reduce(function (s, i) { return s + nodes[i].views; }, 0);
    const hidden = nodes.length - shown.length;
    const pick = h("select", { id: "group-select" }, h("option", { value: "", text: "open a page group…" }));
    nodes.map(function (d, i) { return i; })
      .sort(function (a, b) { return nodes[b].views - nodes[a].views || a - b; })
      .forEach(function (i) {
        pick.appendChild(h("option", { value: String(i), text: iso(nodes[i].name) + " (" + count(nodes[i].views) + " views)" }));
      });
    pick.addEventListener("change", function () { if (pick.value !== "") select(+pick.value); });
    const notice = h("p", { id: "group-notice", class: "notice small" },
      "Showing the " + count(shown.length) + " most viewed of " + count(nodes.length) + " page groups: " +
      count(hidden) + " hidden (" + pct(total ? 1 - drawn / total : 0) + " of page views), with their transitions. ",
      h("label", {}, "Any group: ", pick));
    const box = document.getElementById("network");
    box.parentNode.insertBefore(notice, box);
  }

  function draw(net) {
    const box = document.getElementById("network");
    box.textContent = "";
    const root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img" }, box);
    const defs = svg("defs", {}, root);
    const marker = svg("marker", {
      // fixed size in user units: the default (stroke-width units) blows up on thick edges
      id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "9",
      markerHeight: "9", markerUnits: "userSpaceOnUse", orient: "auto-start-reverse",
    }, defs);
    svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#5b6b7d" }, marker);

    const shown = drawnGroups(net.nodes);
    groupNotice(net, shown);
    // the drawn groups and the transitions between them, renumbered 0..n-1 for the layout
    const local = {};
    shown.forEach(function (g, i) { local[g] = i; });
    const nodes = shown.map(function (g) { return net.nodes[g]; });
    const edges = net.edges.filter(function (e) { return e.source in local && e.target in local; })
      .map(function (e) { return Object.assign({}, e, { source: local[e.source], target: local[e.target] }); });
    const pos = layout(nodes, edges);
    const maxViews = Math.max.apply(null, nodes.map(function (d) { return d.views; }).concat([1]));
    // many groups: smaller circles, so that they do not cover each other
    const rmax = Math.min(30, 220 / Math.sqrt(Math.max(nodes.length, 1))), rmin = nodes.length > 60 ? 3 : 7;
    const radius = nodes.map(function (d) { return rmin + rmax * Math.sqrt(d.views / maxViews); });
    // colour: log page value, from the smallest (the ramp's left end) to the largest; with
    // one value only, from 0
    const values = nodes.map(function (d) { return Math.log1p(Math.max(d.page_value || 0, 0)); });
    const vmax = nodes.length ? Math.max.apply(null, values) : 0;
    let vmin = nodes.length ? Math.min.apply(null, values) : 0;
    if (vmax - vmin < 1e-12) vmin = 0;
    const span = Math.max(vmax - vmin, 1e-9);
    const labelled = {};
    nodes.map(function (d, i) { return i; })
      .sort(function (a, b) { return nodes[b].views - nodes[a].views || a - b; })
      .slice(0, MAX_LABELS).forEach(function (i) { labelled[i] = true; });

    const edgeLayer = svg("g", { class: "edges" }, root);
    state.edgeEls = edges.map(function (e) {
      const a = pos[e.source], b = pos[e.target];
      const dx = b.x - a.x, dy = b.y - a.y, d = Math.sqrt(dx * dx + dy * dy) || 1;
      // bend every edge to its left, so that A->B and B->A do not overlap
      const bend = Math.min(40, d * 0.15), mx = (a.x + b.x) / 2 - (dy / d) * bend, my = (a.y + b.y) / 2 + (dx / d) * bend;
      const ex = b.x - ((b.x - mx) / Math.hypot(b.x - mx, b.y - my)) * (radius[e.target] + 2);
      const ey = b.y - ((b.y - my) / Math.hypot(b.x - mx, b.y - my)) * (radius[e.target] + 2);
      const path = svg("path", {
        class: "edge", d: "M" + a.x.toFixed(1) + "," + a.y.toFixed(1) + " Q" + mx.toFixed(1) + "," +
          my.toFixed(1) + " " + ex.toFixed(1) + "," + ey.toFixed(1),
        "stroke-width": (0.6 + 9 * e.probability).toFixed(2),
        "stroke-opacity": Math.min(0.2 + 0.9 * e.probability, 0.95).toFixed(2),
        "marker-end": "url(#arrow)", "data-source": nodes[e.source].id, "data-target": nodes[e.target].id,
        "data-probability": e.probability,
      }, edgeLayer);
      svg("title", {}, path).textContent = iso(nodes[e.source].name) + " → " + iso(nodes[e.target].name) +
        ": " + pct(e.probability) + " (" + e.count + " transitions)";
      return path;
    });

    const nodeLayer = svg("g", { class: "nodes" }, root);
    state.nodeEls = {};
    nodes.forEach(function (d, i) {
      const c = svg("circle", {
        class: "node", cx: pos[i].x.toFixed(1), cy: pos[i].y.toFixed(1), r: radius[i].toFixed(1),
        fill: colour((values[i] - vmin) / span), "data-group": d.name, "data-id": d.id, tabindex: "0",
      }, nodeLayer);
      svg("title", {}, c).textContent = iso(d.name) + ": " + d.views + " page views, GA page value " +
        num(d.page_value) + ", " + d.n_pages + " pages";
      c.addEventListener("click", function () { select(d.id); });
      c.addEventListener("keydown", function (ev) { if (ev.key === "Enter") select(d.id); });
      if (labelled[i]) {
        const t = svg("text", {
          class: "label", x: pos[i].x.toFixed(1), y: (pos[i].y + radius[i] + 12).toFixed(1),
          "text-anchor": "middle",
        }, nodeLayer);
        t.textContent = d.name.length > 30 ? d.name.slice(0, 29) + "…" : d.name;
      }
      state.nodeEls[d.id] = c;
    });
    applyThreshold();
    legend(Math.expm1(vmin), Math.expm1(vmax));
  }

  // the ramp's ends are the page values the colours map to: log1p(value) from lo to hi
  function legend(lo, hi) {
    const box = document.getElementById("legend");
    const stops = RAMP.map(function (c, i) { return c + " " + (100 * i / (RAMP.length - 1)) + "%"; });
    box.textContent = "";
    box.appendChild(h("span", { text: "GA page value " + num(lo) }));
    const ramp = h("span", { class: "ramp" });
    // through the CSSOM: the CSP forbids style attributes (style-src without 'unsafe-inline')
    ramp.style.background = "linear-gradient(to right, " + stops.join(", ") + ")";
    box.appendChild(ramp);
    box.appendChild(h("span", { text: num(hi) + " (log scale)" }));
  }

  function applyThreshold() {
    const input = document.getElementById("threshold");
    const t = parseFloat(input.value);
    document.getElementById("threshold-value").textContent = Math.round(100 * t) + " %";
    let shown = 0;
    (state.edgeEls || []).forEach(function (e) {
      const hide = parseFloat(e.getAttribute("data-probability")) < t;
      e.classList.toggle("hidden", hide);
      if (!hide) shown++;
    });
    document.getElementById("edge-count").textContent =
      shown + " of " + (state.edgeEls || []).length + " transitions shown";
  }

  // ---- the panel -------------------------------------------------------------------------------

  function select(groupId) {
    const node = state.net.nodes[groupId];
    state.group = node;
    Object.keys(state.nodeEls).forEach(function (id) {
      state.nodeEls[id].classList.toggle("selected", +id === groupId);
    });
    state.edgeEls.forEach(function (e) {
      e.classList.toggle("lit", +e.getAttribute("data-source") === groupId);
    });
    const panel = document.getElementById("panel");
    panel.textContent = "";
    panel.appendChild(h("h2", { text: node.name }));
    if (!state.nodeEls[groupId]) panel.appendChild(h("p", { class: "muted small", text: "(not drawn: not among the most viewed groups)" }));
    const facts = h("dl", { class: "facts" });
    [["page views (train)", String(node.views)], ["GA page value", num(node.page_value)],
     ["pages", String(node.n_pages)], ["next view in the group", pct(node.stay_probability)],
     ["leaves the site", pct(node.exit_probability)]].forEach(function (f) {
      facts.appendChild(h("dt", { text: f[0] })); facts.appendChild(h("dd", { text: f[1] }));
    });
    panel.appendChild(facts);
    const pick = h("select", { id: "page-select" });
    panel.appendChild(h("label", {}, "Visitor on ", pick));
    panel.appendChild(h("div", { id: "organic", class: "muted small" }));
    // the chosen policy's path first (it is short), then every policy's top 3
    panel.appendChild(h("div", { id: "path" }));
    panel.appendChild(h("div", { id: "recs" }, h("p", { class: "muted", text: "Loading…" })));
    api("/api/pages?run=" + q(run) + "&group=" + q(node.name)).then(function (res) {
      const pages = res.pages.slice().sort(function (a, b) { return b.pageviews - a.pageviews || a.page_id - b.page_id; });
      const listed = pages.slice(0, PAGE_LIST);
      // the group's most viewed page in the train split may rank lower over all splits
      const top = pages.find(function (p) { return p.page === node.top_page; });
      if (top && listed.indexOf(top) < 0) listed.push(top);
      listed.forEach(function (p) {
        const o = h("option", { value: p.page, text: iso(p.page) + " (" + p.pageviews + " views, all splits)" });
        if (p.page === node.top_page) o.selected = true;
        pick.appendChild(o);
      });
      if (pages.length > listed.length) {
        pick.parentNode.appendChild(h("span", { id: "page-count", class: "muted small",
          text: " " + count(listed.length) + " of " + count(pages.length) + " pages listed (the most viewed)" }));
      }
      pick.addEventListener("change", function () { showPage(pick.value); });
      showPage(pick.value || node.top_page);
    }).catch(fail("recs"));
  }

  function fail(id) {
    return function (err) {
      const box = document.getElementById(id);
      if (box) { box.textContent = ""; box.appendChild(h("p", { class: "error", text: String(err.message || err) })); }
    };
  }

  function showPage(page) {
    state.page = page;
    const box = document.getElementById("recs");
    Promise.all(state.policies.map(function (p) {
      return api("/api/recommend", { run: run, policy: p.name, history: [page], k: K });
    })).then(function (answers) {
      if (state.page !== page) return; // a newer click won
      box.textContent = "";
      const first = answers[0];
      document.getElementById("organic").textContent = "Without a recommendation the expected reward (" + REWARD +
        ") of the next page view is " + num(first.organic.expected_value) + "; " + pct(first.organic.exit_probability) + " leave.";
      box.appendChild(h("p", { class: "muted small", text: "Top " + K + " per policy (best evaluated first; stale results last): the chance the next page is the recommended one (organic chance in brackets) and the expected reward (" + REWARD + ") of the next page view." }));
      answers.forEach(function (a) { box.appendChild(recTable(a)); });
    }).catch(fail("recs"));
    showPath();
  }

  function recTable(a) {
    const wrap = h("section", { class: "policy-recs", "data-policy": a.policy });
    const info = state.policies.find(function (p) { return p.name === a.policy; });
    wrap.appendChild(h("h3", {}, h("span", { class: "policy-name", text: a.policy }),
      info && info.results_stale ? h("em", { class: "stale", text: " stale results" }) : null));
    if (a.policy === "organic") {
      wrap.appendChild(h("p", { class: "nothing", text: "shows nothing (the baseline)" }));
      return wrap;
    }
    if (a.prefers_nothing) wrap.appendChild(h("p", { class: "nothing", text: "its best action here is to show nothing; next best:" }));
    const table = h("table", {}, h("tr", {}, h("th", { text: "#" }), h("th", { text: "recommended" }),
      h("th", { class: "num", text: "follow" }), h("th", { class: "num", title: "expected " + REWARD + " of the next page view", text: "exp. reward" })));
    a.recommendations.forEach(function (r) {
      table.appendChild(h("tr", { class: "recommendation", "data-page": r.page || r.page_group },
        h("td", { text: String(r.rank) }),
        h("td", { class: "page", title: r.page || r.page_group, text: r.page ? short(r.page) : "group " + r.page_group }),
        h("td", { class: "num", text: (r.slate_follow_probability != null ? pct(r.slate_follow_probability) + " in the slate, " : "") + pct(r.follow_probability) + " (" + pct(r.organic_probability) + ")" }),
        h("td", { class: "num", text: num(r.expected_value) })));
    });
    wrap.appendChild(table);
    return wrap;
  }

  function showPath() {
    const box = document.getElementById("path");
    if (!box || !state.page) return;
    const page = state.page, policy = state.pathPolicy;
    api("/api/path", { run: run, policy: policy, history: [page], steps: 5 }).then(function (res) {
      if (state.page !== page || state.pathPolicy !== policy) return;
      box.textContent = "";
      box.appendChild(h("h3", { text: "Likeliest path under " + policy }));
      box.appendChild(h("p", { class: "muted small", text: "The most likely next page at each step, with the policy's own choice shown (its best action, or nothing); it ends where leaving is likelier than any next page." }));
      const ol = h("ol", { class: "path" });
      ol.appendChild(h("li", { class: "path-start", title: res.start.page }, h("span", { class: "page", text: short(res.start.page) }), " (start)"));
      res.steps.forEach(function (s) {
        const rec = s.recommended ? (s.recommended.page ? short(s.recommended.page) : "group " + s.recommended.page_group) : null;
        const leave = "leave " + pct(s.exit_probability);
        const li = h("li", { class: "path-step" + (s.exit_likelier ? " exit-likelier" : "") },
          h("span", { class: "page", title: s.next_page.page, text: short(s.next_page.page) }),
          " — " + pct(s.probability) + ", reward " + num(s.reward) + (s.loop ? " (back on the path: stop)" : ""),
          s.exit_likelier ? h("strong", { class: "leave", text: " leaving is likelier (" + pct(s.exit_probability) + "): most visitors end here" }) : null,
          h("br"),
          h("span", { class: "muted small", text: rec ? "shown: " + iso(rec) + " (followed " + pct(s.follow_probability) + "), " + leave : "nothing shown, " + leave }));
        ol.appendChild(li);
      });
      box.appendChild(ol);
      box.appendChild(h("p", { class: "small", id: "path-sum", text: "Path probability " + pct(res.probability) + "; reward (" + REWARD + ") of its pages summed: " + num(res.reward_sum) + "." }));
    }).catch(fail("path"));
  }

  // ---- start -------------------------------------------------------------------------------------

  document.getElementById("threshold").addEventListener("input", applyThreshold);
  Promise.all([api("/api/network?run=" + q(run)), api("/api/policies?run=" + q(run))]).then(function (r) {
    state.net = r[0];
    // best first by the evaluation (mean return), those with stale results after the fresh
    // ones, organic (the baseline) last
    state.policies = r[1].policies.slice().sort(function (a, b) {
      const rank = function (p) { return p.baseline ? 2 : (p.results_stale ? 1 : 0); };
      const va = a.mean_return === null ? -1e300 : a.mean_return;
      const vb = b.mean_return === null ? -1e300 : b.mean_return;
      return rank(a) - rank(b) || vb - va || (a.name < b.name ? -1 : 1);
    });
    const sel = document.getElementById("policy-select");
    state.policies.forEach(function (p) {
      const o = h("option", { value: p.name, text: p.name + (p.results_stale ? " (stale results)" : "") });
      if (p.name === state.pathPolicy) o.selected = true;
      sel.appendChild(o);
    });
    sel.addEventListener("change", function () { state.pathPolicy = sel.value; showPath(); });
    draw(state.net);
    app.setAttribute("data-ready", "true");
  }).catch(function (err) {
    document.getElementById("network").textContent = "Could not load the network: " + err.message;
  });
})();
