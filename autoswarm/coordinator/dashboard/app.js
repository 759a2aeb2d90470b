// The autoswarm dashboard: routes by address, reads the REST API (/api/v1), and follows
// the server-sent event stream to refresh what it shows without a reload.
"use strict";

(function () {
  const API = "/api/v1";
  const CHART_POINTS = 2000; // the newest scored experiments drawn on a task's chart
  const TOKEN_KEY = "autoswarm.token";
  const main = () => document.getElementById("main");
  let current = null; // the page on screen: {refresh(event), taskId}
  let stream = null; // the event stream's AbortController

  // -- tokens: `#token=...` once (never sent to the server in a URL), kept per tab ---------
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = () => sessionStorage.getItem(TOKEN_KEY);
  const headers = () => (token() ? { Authorization: `Bearer ${token()}` } : {});

  class Unauthorized extends Error {}

  async function api(path, params) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") query.set(k, v);
    const url = `${API}/${path}${query.toString() ? "?" + query : ""}`;
    const answer = await fetch(url, { headers: headers() });
    if (answer.status === 401) throw new Unauthorized();
    const body = await answer.json();
    if (!answer.ok) throw new Error(body.detail || `${answer.status}`);
    return body;
  }

  // -- DOM helpers: text always goes in as text ---------------------------------------------
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  const link = (href, text, attrs) => h("a", { href, "data-nav": true, ...(attrs || {}) }, text);
  const badge = (text) => (text ? h("span", { class: `badge ${text}` }, text) : "");
  const short = (sha) => (sha || "").slice(0, 7);
  function num(v, digits) {
    if (v === null || v === undefined) return "";
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
    return (+v.toPrecision(digits || 6)).toString();
  }
  // A score and its noise, as the command line writes them (autoswarm/cli/numbers.py): the
  // noise's first significant digit and one more (at most 6 decimals), then (n=runs).
  function decimalsFor(std) {
    if (!(std > 0) || !isFinite(std)) return 6;
    return Math.max(0, Math.min(6, 1 - Math.floor(Math.log10(std))));
  }
  function scoreText(mean, std, runs) {
    if (mean === null || mean === undefined) return "—";
    const d = decimalsFor(std);
    const spread = std === null || std === undefined ? "?" : std.toFixed(d);
    return `${mean.toFixed(d)} ± ${spread} (n=${runs || 0})`;
  }
  const signed = (v) => (v === null || v === undefined ? "" : (v > 0 ? "+" : "") + num(v, 4));
  const when = (s) => (s ? new Date(s * 1000).toLocaleString() : "");
  // Credit is in reference (H100) seconds.
  function credit(s) {
    if (s < 60) return `${(+s.toPrecision(3))} s`;
    if (s < 36000) return `${(s / 60).toFixed(1)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  function show(...nodes) {
    main().replaceChildren(...nodes.flat(Infinity).filter((n) => n !== "" && n !== null && n !== undefined));
  }

  // -- the event stream, read with fetch so a token can go in a header ----------------------
  function follow(taskId) {
    if (stream) stream.abort();
    const control = new AbortController();
    stream = control;
    const live = document.getElementById("live");
    let lastId = null;
    (async () => {
      while (!control.signal.aborted) {
        try {
          const params = new URLSearchParams();
          if (taskId) params.set("task_id", taskId);
          const extra = lastId ? { "Last-Event-ID": lastId } : {};
          const answer = await fetch(`${API}/events/stream?${params}`, {
            headers: { ...headers(), ...extra, Accept: "text/event-stream" },
            signal: control.signal,
          });
          if (!answer.ok) throw new Error(`stream ${answer.status}`);
          live.className = "live on";
          // Whatever happened before this connection (or while it was down): show it now.
          onEvent(null);
          const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let cut;
            while ((cut = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, cut);
              buffer = buffer.slice(cut + 2);
              const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
              const id = block.split("\n").find((l) => l.startsWith("id:"));
              if (id) lastId = id.slice(3).trim();
              if (data) onEvent(JSON.parse(data));
            }
          }
        } catch (err) {
          if (control.signal.aborted) return;
        }
        live.className = "live off";
        await new Promise((r) => setTimeout(r, 2000));
      }
    })();
  }

  let pending = null;
  function onEvent(event) {
    if (event) window.__autoswarmEvents = (window.__autoswarmEvents || 0) + 1;
    if (!current || !current.refresh) return;
    if (pending) clearTimeout(pending);
    pending = setTimeout(() => {
      pending = null;
      current.refresh(event).catch(() => {});
    }, 250);
  }

  // -- pages --------------------------------------------------------------------------------
  async function home() {
    const tasks = await api("tasks");
    const cards = tasks.map((task) => {
      const spec = task.spec;
      return h("div", { class: "card" },
        h("h2", {}, link(`/tasks/${encodeURIComponent(task.task_id)}`, task.task_id)),
        h("div", { class: "muted" }, `${spec.metric.name}, ${spec.metric.direction}; budget ${spec.budget_s} s`),
        task.heads.length
          ? h("dl", { class: "kv" }, task.heads.flatMap((head) => [
              h("dt", {}, head.hardware),
              h("dd", {}, `${scoreText(head.mean, head.std, head.runs)} at ${short(head.commit)}`),
            ]))
          : h("p", { class: "muted" }, "no hardware class yet: waiting for a worker"));
    });
    show(h("h1", {}, "Tasks"),
      cards.length ? h("div", { class: "grid" }, cards) : h("p", { class: "muted" }, "No task registered yet."),
      h("p", {}, link("/contributors", "Contributors and their credit →")));
    return { refresh: home };
  }

  const FILTERS = [
    ["status", "state", ["", "queued", "leased", "done", "dead"]],
    ["kind", "kind", ["", "explore", "baseline", "replicate", "merge"]],
    ["verdict", "verdict", ["", "kept", "discarded", "not-reproduced", "crashed", "conflict", "pending"]],
    ["result", "result", ["", "ok", "crash", "timeout", "invalid"]],
  ];
  const TEXT_FILTERS = [["worker_id", "worker"], ["owner", "owner"], ["proposer", "proposer"], ["model", "model"]];

  function filterForm(task, state, onChange) {
    const form = h("form", { class: "filters", id: "filters" });
    const field = (name, label, control) => h("label", {}, label, control);
    for (const [name, label, values] of FILTERS) {
      const select = h("select", { name }, values.map((v) => h("option", { value: v, selected: state[name] === v }, v || "any")));
      form.append(field(name, label, select));
    }
    const classes = task.heads.map((head) => head.hardware);
    form.append(field("hardware", "hardware", h("select", { name: "hardware" },
      ["", ...classes].map((v) => h("option", { value: v, selected: state.hardware === v }, v || "any")))));
    for (const [name, label] of TEXT_FILTERS) {
      form.append(field(name, label, h("input", { name, value: state[name] || "", size: 10 })));
    }
    form.append(field("sort", "sort", h("select", { name: "sort" },
      ["time", "score"].map((v) => h("option", { value: v, selected: (state.sort || "time") === v }, v)))));
    form.addEventListener("change", () => onChange(Object.fromEntries(new FormData(form))));
    form.addEventListener("submit", (e) => { e.preventDefault(); onChange(Object.fromEntries(new FormData(form))); });
    return form;
  }

  function experimentRows(experiments) {
    return experiments.map((e) => h("tr", { class: e.verdict === "kept" && e.kind !== "replicate" ? "kept" : null, "data-eid": e.experiment_id },
      h("td", { class: "num wide" }, e.seq),
      h("td", {}, link(`/experiments/${e.experiment_id}`, e.experiment_id, { class: "mono" })),
      h("td", {}, e.kind),
      h("td", {}, badge(e.verdict || e.state)),
      h("td", { class: "num" }, num(e.metric)),
      h("td", { class: "num wide" }, e.kind === "baseline" ? "" : signed(e.delta)),
      h("td", {}, e.title),
      h("td", { class: "wide mono" }, e.hardware),
      h("td", { class: "wide" }, e.owner || ""),
      h("td", { class: "wide" }, e.proposer),
      h("td", { class: "wide" }, when(e.finished_s))));
  }

  function experimentsTable(metric) {
    const body = h("tbody", {});
    const table = h("table", { id: "experiments" },
      h("thead", {}, h("tr", {}, h("th", { class: "num wide" }, "#"), h("th", {}, "experiment"), h("th", {}, "kind"),
        h("th", {}, "verdict"), h("th", { class: "num" }, metric), h("th", { class: "num wide" }, "Δ"),
        h("th", {}, "hypothesis"), h("th", { class: "wide" }, "hardware"), h("th", { class: "wide" }, "owner"),
        h("th", { class: "wide" }, "proposer"), h("th", { class: "wide" }, "finished"))),
      body);
    return { table, body };
  }

  function boardCard(board, metric) {
    const chain = board.chain.filter((c) => c.experiment_id);
    return h("div", { class: "card" },
      h("div", { class: "muted mono" }, board.hardware),
      h("div", { class: "stat" }, scoreText(board.mean, board.std, board.runs)),
      h("div", { class: "muted" }, `head ${short(board.head_commit)}; ${chain.length} kept change${chain.length === 1 ? "" : "s"}`),
      chain.length ? h("ol", {}, chain.map((c) => h("li", {},
        link(`/experiments/${c.experiment_id}`, c.title), " ",
        h("span", { class: "muted" }, `${metric} ${num(c.metric)} (${signed(c.delta)})${c.owner ? " by " + c.owner : ""}`)))) : "");
  }

  async function taskPage(taskId) {
    const state = Object.fromEntries(new URLSearchParams(location.search));
    const task = await api(`tasks/${encodeURIComponent(taskId)}`);
    const metric = task.spec.metric.name;
    const boards = h("div", { class: "heads", id: "leaderboard" });
    const chart = h("div", { class: "chart-wrap", id: "chart" });
    // The chart's x axis: experiments (default) or time, kept in the address (?x=time).
    let xMode = state.x === "time" ? "time" : "experiments";
    delete state.x;
    let lastProgress = null;
    const axisButton = (mode, text) => {
      const button = h("button", { type: "button", class: "axis-choice", "data-x": mode, "aria-pressed": String(xMode === mode) }, text);
      button.addEventListener("click", () => {
        xMode = mode;
        for (const b of axis.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.x === xMode));
        const query = new URLSearchParams({ ...state, ...(xMode === "time" ? { x: "time" } : {}) }).toString();
        history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
        if (lastProgress) window.AutoswarmChart.render(chart, lastProgress, (eid) => navigate(`/experiments/${eid}`), xMode);
      });
      return button;
    };
    const axis = h("div", { class: "axis-switch", id: "x-axis" }, "x: ", axisButton("experiments", "experiments"), axisButton("time", "time"));
    const { table, body } = experimentsTable(metric);
    const more = h("button", { class: "more", type: "button", hidden: true }, "more");
    const counts = h("span", { class: "muted", id: "counts" });
    let cursor = null;

    async function loadBoards() {
      const fresh = await api(`tasks/${encodeURIComponent(taskId)}/leaderboard`);
      boards.replaceChildren(...fresh.classes.map((b) => boardCard(b, metric)));
      const c = fresh.counts;
      // Kept changes are the lineage's commits (the cards' chains), not the runs that kept them.
      const changes = fresh.classes.reduce((n, b) => n + b.chain.filter((x) => x.experiment_id).length, 0);
      counts.textContent = `${c["kind:explore"] || 0} hypotheses run · ${changes} kept change${changes === 1 ? "" : "s"} · ` +
        `${c["state:queued"] || 0} experiments queued · ${c["state:leased"] || 0} running`;
    }
    async function loadChart() {
      lastProgress = await api(`tasks/${encodeURIComponent(taskId)}/progress`, { limit: CHART_POINTS });
      window.AutoswarmChart.render(chart, lastProgress, (eid) => navigate(`/experiments/${eid}`), xMode);
    }
    async function loadTable(append) {
      const params = { ...state, task_id: taskId, view: "summary", limit: 50, cursor: append ? cursor : null };
      let page;
      try {
        page = await api("experiments", params);
      } catch (err) {
        if (err instanceof Unauthorized) throw err;
        body.replaceChildren(h("tr", {}, h("td", { colspan: 11, class: "muted" }, String(err.message))));
        more.hidden = true;
        return;
      }
      const rows = experimentRows(page.experiments);
      if (append) body.append(...rows); else body.replaceChildren(...rows);
      if (!append && !rows.length) body.append(h("tr", {}, h("td", { colspan: 11, class: "muted" }, "no experiment matches")));
      cursor = page.next_cursor;
      more.hidden = !cursor;
    }
    more.addEventListener("click", () => loadTable(true));
    const form = filterForm(task, state, (values) => {
      for (const k of Object.keys(state)) delete state[k];
      for (const [k, v] of Object.entries(values)) if (v && !(k === "sort" && v === "time")) state[k] = v;
      const query = new URLSearchParams({ ...state, ...(xMode === "time" ? { x: "time" } : {}) }).toString();
      history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
      loadTable(false);
    });
    show(h("h1", {}, task.task_id, " ", h("span", { class: "muted" }, `${metric} (${task.spec.metric.direction})`)),
      h("p", {}, link(`/tasks/${encodeURIComponent(taskId)}/lineage`, "lineage tree"), " · ", counts),
      h("div", { class: "top-row" }, h("div", { class: "progress" }, axis, chart), boards),
      h("h2", {}, "Experiments"), form, h("div", { class: "scroll" }, table), more);
    await Promise.all([loadBoards(), loadChart(), loadTable(false)]);
    return { taskId, refresh: () => Promise.all([loadBoards(), loadChart(), loadTable(false)]) };
  }

  function diffView(text) {
    const pre = h("pre", { class: "diff", id: "diff" });
    for (const line of text.split("\n")) {
      let cls = null;
      if (line.startsWith("+++") || line.startsWith("---") || line.startsWith("diff ") || line.startsWith("index ")) cls = "meta";
      else if (line.startsWith("+")) cls = "add";
      else if (line.startsWith("-")) cls = "del";
      else if (line.startsWith("@@")) cls = "hunk";
      pre.append(cls ? h("span", { class: cls }, line) : line + "\n");
    }
    return pre;
  }

  async function experimentPage(experimentId) {
    const e = await api(`experiments/${encodeURIComponent(experimentId)}`);
    const hyp = e.hypothesis;
    const result = e.result;
    const facts = [
      ["task", link(`/tasks/${encodeURIComponent(e.task_id)}`, e.task_id)],
      ["kind", e.kind], ["state", badge(e.state)], ["verdict", badge(e.effective_verdict)],
      ["hardware", e.measured_on || e.hardware || ""], ["worker", `${e.worker_id || ""}${e.owner ? " (" + e.owner + ")" : ""}`],
      ["parent", h("span", { class: "mono" }, short(e.parent_commit))], ["code", h("span", { class: "mono" }, short(e.code_commit))],
      ["candidate", e.candidate_id ? link(`/experiments/${e.candidate_id}`, e.candidate_id) : ""],
      ["replicate", e.replicate_id ? link(`/experiments/${e.replicate_id}`, e.replicate_id) : ""],
      ["created", when(e.created_s)], ["finished", when(e.finished_s)],
    ].filter(([, v]) => v !== "" && v !== null);
    const resultFacts = result ? [
      ["status", badge(result.status)], ["metric", num(result.metric)],
      ["wall", result.wall_s ? `${num(result.wall_s, 4)} s` : ""],
      ["memory", result.peak_vram_mb ? `${num(result.peak_vram_mb, 5)} MB VRAM` : result.peak_rss_mb ? `${num(result.peak_rss_mb, 5)} MB RSS` : ""],
      ["error", result.error || ""],
      ...Object.entries(result.metrics || {}).map(([k, v]) => [k, num(v)]),
    ].filter(([, v]) => v !== "") : [];
    const kv = (rows) => h("dl", { class: "kv" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    show(h("h1", {}, hyp ? hyp.title : e.kind === "baseline" ? "baseline" : e.experiment_id),
      h("p", { class: "muted mono" }, e.experiment_id),
      h("div", { class: "card" }, kv(facts)),
      h("h2", {}, "Why"), h("div", { class: "card", id: "reason" }, e.reason || e.last_error || (hyp && hyp.reason) || "not decided yet"),
      hyp ? [h("h2", {}, "Hypothesis"), h("div", { class: "card", id: "rationale" },
        h("p", {}, hyp.rationale || h("span", { class: "muted" }, "no rationale given")),
        h("p", { class: "muted" }, `${hyp.author ? "by " + hyp.author + " " : ""}via ${hyp.proposer}`))] : "",
      result ? [h("h2", {}, "Result"), h("div", { class: "card" }, kv(resultFacts))] : "",
      h("h2", {}, "Diff against its parent"), e.diff ? diffView(e.diff) : h("p", { class: "muted", id: "diff" }, "no change (the head's own code)"),
      h("h2", {}, "Log tail"), h("pre", { id: "log" }, (result && result.log_tail) || e.last_error || ""));
    return {
      taskId: e.task_id,
      refresh: async (event) => {
        if (!event || event.experiment_id === experimentId) current = await experimentPage(experimentId);
      },
    };
  }

  async function lineagePage(taskId) {
    const tree = await api(`tasks/${encodeURIComponent(taskId)}/lineage`);
    const byParent = new Map();
    for (const node of tree.nodes) {
      const key = tree.nodes.some((n) => n.commit === node.parent) ? node.parent : null;
      if (!byParent.has(key)) byParent.set(key, []);
      byParent.get(key).push(node);
    }
    const branch = (parent) => h("ul", { class: parent === null ? "tree" : null },
      (byParent.get(parent) || []).map((node) => h("li", { "data-commit": node.commit },
        h("span", { class: "node" },
          h("span", { class: "mono" }, short(node.commit)),
          node.experiment_id ? link(`/experiments/${node.experiment_id}`, node.title) : h("strong", {}, node.title),
          node.metric !== null ? h("span", { class: "muted" }, `${num(node.metric)} (${signed(node.delta)})`) : "",
          node.heads.map((hw) => h("span", { class: "badge kept" }, `head ${hw}`)),
          h("span", { class: "muted" }, `${node.tried} tried here`)),
        byParent.has(node.commit) ? branch(node.commit) : "")));
    show(h("h1", {}, `${taskId}: lineage`),
      h("p", { class: "muted" }, "Every kept change, per hardware class branch, from the task's first code; 'tried' counts the experiments built on each commit."),
      h("p", {}, link(`/tasks/${encodeURIComponent(taskId)}`, "← task")),
      h("div", { class: "card", id: "lineage" }, branch(null)));
    return { taskId, refresh: () => lineagePage(taskId).then((page) => { current = page; }) };
  }

  async function contributorsPage() {
    const answer = await api("contributors", { limit: 200 });
    const rows = answer.contributors.map((c) => h("tr", {},
      h("td", {}, c.owner), h("td", { class: "wide" }, c.team), h("td", { class: "num" }, credit(c.credit)),
      h("td", { class: "num wide" }, credit(c.work_s)), h("td", { class: "num wide" }, credit(c.bonus_s)),
      h("td", { class: "num" }, c.experiments), h("td", { class: "num" }, c.kept), h("td", { class: "num wide" }, c.workers)));
    const teams = answer.teams.map((t) => h("tr", {}, h("td", {}, t.team), h("td", { class: "num" }, credit(t.credit))));
    show(h("h1", {}, "Contributors"),
      h("div", { class: "scroll" }, h("table", { id: "contributors" },
        h("thead", {}, h("tr", {}, h("th", {}, "owner"), h("th", { class: "wide" }, "team"), h("th", { class: "num" }, "credit (H100 time)"),
          h("th", { class: "num wide" }, "work"), h("th", { class: "num wide" }, "kept bonus"), h("th", { class: "num" }, "runs"),
          h("th", { class: "num" }, "kept"), h("th", { class: "num wide" }, "workers"))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "no finished run yet"))))),
      teams.length ? [h("h2", {}, "Teams"), h("div", { class: "scroll" }, h("table", { id: "teams" },
        h("thead", {}, h("tr", {}, h("th", {}, "team"), h("th", { class: "num" }, "credit (H100 time)"))), h("tbody", {}, teams)))] : "",
      h("h2", {}, "How credit is counted"), h("div", { class: "formula", id: "formula" }, answer.formula),
      h("div", { class: "scroll" }, h("table", { id: "factors" },
        h("thead", {}, h("tr", {}, h("th", {}, "hardware class"), h("th", { class: "num" }, "factor"))),
        h("tbody", {}, answer.factors.map(([pattern, factor]) => h("tr", {}, h("td", { class: "mono" }, pattern), h("td", { class: "num" }, factor)))))));
    return { refresh: contributorsPage };
  }

  function loginPage(retry) {
    const input = h("input", { type: "password", placeholder: "a read token", autocomplete: "off" });
    const form = h("form", { class: "card login" },
      h("h1", {}, "A token is needed"),
      h("p", { class: "muted" }, "This coordinator shows its results to token holders only. Paste a read token (autoswarm token create --scope read)."),
      input, h("button", { type: "submit" }, "open"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      retry();
    });
    show(form);
  }

  // -- routing ------------------------------------------------------------------------------
  const ROUTES = [
    [/^\/$/, () => home()],
    [/^\/contributors$/, () => contributorsPage()],
    [/^\/tasks\/([^/]+)\/lineage$/, (m) => lineagePage(decodeURIComponent(m[1]))],
    [/^\/tasks\/([^/]+)$/, (m) => taskPage(decodeURIComponent(m[1]))],
    [/^\/experiments\/([^/]+)$/, (m) => experimentPage(decodeURIComponent(m[1]))],
  ];

  async function route() {
    const path = location.pathname;
    for (const [pattern, page] of ROUTES) {
      const m = path.match(pattern);
      if (!m) continue;
      try {
        current = await page(m);
        document.title = `autoswarm: ${path === "/" ? "tasks" : path.slice(1)}`;
        follow(current && current.taskId);
        document.body.dataset.ready = "1";
      } catch (err) {
        if (err instanceof Unauthorized) loginPage(route);
        else show(h("h1", {}, "Not found"), h("p", { class: "muted" }, String(err.message)));
      }
      return;
    }
    show(h("h1", {}, "Not found"), h("p", {}, link("/", "tasks")));
  }

  function navigate(path) {
    history.pushState(null, "", path);
    document.body.dataset.ready = "";
    route();
  }

  document.addEventListener("click", (event) => {
    const a = event.target.closest && event.target.closest("a[data-nav]");
    if (!a || event.metaKey || event.ctrlKey || event.shiftKey || a.origin !== location.origin) return;
    event.preventDefault();
    navigate(a.pathname + a.search);
  });
  window.addEventListener("popstate", route);
  route();
})();
