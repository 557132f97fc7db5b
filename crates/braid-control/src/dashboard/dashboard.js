// braid dashboard: polls the daemon's REST API and draws what it gets. No library, nothing
// fetched from elsewhere; the charts are drawn by hand on <canvas>. The server side, and why
// the page itself needs no token, is crates/braid-control/src/dashboard.rs.
//
// Settings come from the URL fragment (never sent to the server):
//   #token=<bearer token>   kept in sessionStorage, then removed from the address bar
//   &interval=<ms>          poll period, 250..60000 (default 1000)
//   &points=<n>             samples kept and drawn per chart, 10..3600 (default 300)
//
// What the page exposes for tests: each chart's <canvas> has data-points (samples held) and
// data-last (JSON: series label -> last value, null when not measured); <body> has
// data-updates (successful polls), data-errors (failed ones) and data-state
// (starting | ok | error | unauthorized | no-token | paused).
"use strict";

(() => {
  // The endpoints this page reads, GET only, and its only fetch is getJson's. braid-control's
  // tests check every API path written in this file against the OpenAPI document (path and
  // query parameters): write each in full here, build none from pieces.
  const ENDPOINTS = {
    stats: "/v1/stats",
    nics: "/v1/nics",
    flows: "/v1/flows?limit=50",
  };
  const FLOWS_SHOWN = 50;
  const TOKEN_KEY = "braid.dashboard.token";
  const INTERVAL_KEY = "braid.dashboard.interval_ms";
  const MIN_INTERVAL_MS = 250;
  const MAX_INTERVAL_MS = 60000;
  const DEFAULT_INTERVAL_MS = 1000;
  const MIN_POINTS = 10;
  const MAX_POINTS = 3600;
  const DEFAULT_POINTS = 300;
  const REQUEST_TIMEOUT_MS = 5000;
  const PALETTE = ["#2458d6", "#d6452b", "#1b8a5a", "#9b51e0", "#d99a00", "#0f9fb5",
    "#c2347a", "#5f6b7a"];

  const $ = (id) => document.getElementById(id);

  // ---- settings -------------------------------------------------------------------------

  // sessionStorage may be unavailable (disabled storage): fall back to this tab's memory.
  const memory = new Map();
  const store = {
    get(key) {
      try { return sessionStorage.getItem(key); } catch (_) { return memory.get(key) ?? null; }
    },
    set(key, value) {
      try { sessionStorage.setItem(key, value); } catch (_) { memory.set(key, value); }
    },
    remove(key) {
      try { sessionStorage.removeItem(key); } catch (_) { /* memory only */ }
      memory.delete(key);
    },
  };

  function clampInt(text, min, max, fallback) {
    const n = Number.parseInt(text ?? "", 10);
    return Number.isFinite(n) ? Math.min(max, Math.max(min, n)) : fallback;
  }

  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has("token")) {
    const t = (fragment.get("token") || "").trim();
    if (t) store.set(TOKEN_KEY, t);
    fragment.delete("token");
    // The token leaves the address bar (and the tab's history entry) at once.
    const rest = fragment.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }
  let token = store.get(TOKEN_KEY);
  let intervalMs = clampInt(fragment.get("interval") ?? store.get(INTERVAL_KEY),
    MIN_INTERVAL_MS, MAX_INTERVAL_MS, DEFAULT_INTERVAL_MS);
  const points = clampInt(fragment.get("points"), MIN_POINTS, MAX_POINTS, DEFAULT_POINTS);

  // ---- state ----------------------------------------------------------------------------

  // One sample per successful poll, oldest first, at most `points`:
  // {t (ms since epoch), nics: Map name -> {tx, rx, srtt, p99, loss}}.
  const samples = [];
  const colours = new Map(); // NIC name -> palette index, in order of first sight
  let latest = null; // {stats, nics, flows} of the last successful poll
  let previousDrops = null;
  let updates = 0;
  let errors = 0;
  let timer = null;
  let paused = false;
  let lastUpdate = null;

  function setState(state) {
    document.body.dataset.state = state;
  }

  // ---- formatting -----------------------------------------------------------------------

  function num(v) {
    return typeof v === "number" && Number.isFinite(v) ? v : null;
  }

  function sig(v) {
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1).replace(/\.0$/, "");
    return v.toFixed(2).replace(/\.?0+$/, "");
  }

  function si(v, unit) {
    if (v === null) return "–";
    const steps = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (const [f, p] of steps) {
      if (Math.abs(v) >= f) return sig(v / f) + " " + p + unit;
    }
    return sig(v) + " " + unit;
  }

  const fmt = {
    bits: (v) => si(v, "bit/s"),
    bytes: (v) => si(v, "B"),
    us: (v) => {
      if (v === null) return "–";
      if (Math.abs(v) >= 1e6) return sig(v / 1e6) + " s";
      if (Math.abs(v) >= 1e3) return sig(v / 1e3) + " ms";
      return sig(v) + " µs";
    },
    ms: (v) => (v === null ? "–" : v >= 1000 ? sig(v / 1000) + " s" : sig(v) + " ms"),
    ratio: (v) => (v === null ? "–" : sig(v * 100) + " %"),
    count: (v) => (v === null ? "–" : Math.round(v).toLocaleString("en-US")),
  };

  // ---- charts ---------------------------------------------------------------------------

  // Each chart: which value of a NIC's sample it plots, its unit's formatter, and the least
  // top of its y axis (so an idle link draws a flat line at the bottom, not a magnified
  // jitter).
  const CHARTS = [
    { id: "tx", fmt: fmt.bits, floor: 1e3, series: [{ key: "tx", suffix: "" }] },
    { id: "rx", fmt: fmt.bits, floor: 1e3, series: [{ key: "rx", suffix: "" }] },
    {
      id: "rtt", fmt: fmt.us, floor: 1e3,
      series: [{ key: "srtt", suffix: " srtt" }, { key: "p99", suffix: " p99", dashed: true }],
    },
    { id: "loss", fmt: fmt.ratio, floor: 0.01, series: [{ key: "loss", suffix: "" }] },
  ];

  function colourOf(name) {
    if (!colours.has(name)) colours.set(name, colours.size);
    return PALETTE[colours.get(name) % PALETTE.length];
  }

  // NIC names in the order of the newest sample, then any that only older samples have.
  function nicNames() {
    const names = [];
    for (let i = samples.length - 1; i >= 0; i--) {
      for (const name of samples[i].nics.keys()) {
        if (!names.includes(name)) names.push(name);
      }
    }
    return names;
  }

  // The chart's series: one per NIC and value kind; a kind that no sample has (p99 while
  // the daemon keeps no histogram) is left out.
  function seriesOf(chart) {
    const out = [];
    for (const name of nicNames()) {
      for (const s of chart.series) {
        const values = samples.map((sample) => {
          const n = sample.nics.get(name);
          return { t: sample.t, v: n ? n[s.key] : null };
        });
        if (s.dashed && values.every((p) => p.v === null)) continue;
        out.push({ label: name + s.suffix, colour: colourOf(name), dashed: !!s.dashed, values });
      }
    }
    return out;
  }

  // The least of 1, 2, 2.5, 5 (times a power of ten) that is at least `v`.
  function niceStep(v) {
    const base = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (m * base >= v * (1 - 1e-9)) return m * base;
    }
    return 10 * base;
  }

  const X_STEPS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];

  function xLabel(s) {
    if (s === 0) return "now";
    if (s % 60 === 0) return "-" + s / 60 + " min";
    return "-" + s + " s";
  }

  function drawChart(chart) {
    const canvas = $("chart-" + chart.id);
    const series = seriesOf(chart);
    const last = {};
    for (const s of series) last[s.label] = s.values.length ? s.values[s.values.length - 1].v : null;
    canvas.dataset.points = String(samples.length);
    canvas.dataset.last = JSON.stringify(last);
    drawLegend(chart, series);

    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const m = { l: 72, r: 12, t: 8, b: 20 };
    const pw = w - m.l - m.r;
    const ph = h - m.t - m.b;
    if (pw < 20 || ph < 20) return;
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;

    // x: the last `points` poll periods, ending at the newest sample.
    const end = samples.length ? samples[samples.length - 1].t : Date.now();
    const spanMs = points * intervalMs;
    const x = (t) => m.l + pw * (1 - (end - t) / spanMs);
    // y: 0 to a round number above the largest value (at least the chart's floor).
    let max = 0;
    for (const s of series) {
      for (const p of s.values) {
        if (p.v !== null && p.v > max) max = p.v;
      }
    }
    const high = Math.max(max, chart.floor);
    const step = niceStep(high / 4);
    const top = step * Math.max(1, Math.ceil(high / step - 1e-9));
    const y = (v) => m.t + ph * (1 - v / top);

    // Grid and axes.
    ctx.strokeStyle = "#e2e5ea";
    ctx.fillStyle = "#6b7280";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let v = 0; v <= top * (1 + 1e-9); v += step) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(m.l, yy);
      ctx.lineTo(m.l + pw, yy);
      ctx.stroke();
      ctx.fillText(chart.fmt(v), m.l - 6, yy);
    }
    const spanS = spanMs / 1000;
    const xStep = X_STEPS_S.find((s) => spanS / s <= 6) || X_STEPS_S[X_STEPS_S.length - 1];
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let s = 0; s <= spanS; s += xStep) {
      const xx = Math.round(m.l + pw * (1 - s / spanS)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(xx, m.t);
      ctx.lineTo(xx, m.t + ph);
      ctx.stroke();
      // The leftmost label would sit under the y axis' lowest one.
      if (xx > m.l + 24) ctx.fillText(xLabel(s), Math.min(xx, m.l + pw - 12), m.t + ph + 4);
    }
    ctx.strokeStyle = "#9aa1ad";
    ctx.beginPath();
    ctx.moveTo(m.l + 0.5, m.t);
    ctx.lineTo(m.l + 0.5, m.t + ph + 0.5);
    ctx.lineTo(m.l + pw, m.t + ph + 0.5);
    ctx.stroke();

    if (!samples.length) {
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(token ? "waiting for data" : "no token", m.l + pw / 2, m.t + ph / 2);
      return;
    }

    // The lines: a missing value, or a pause longer than three poll periods, breaks them.
    ctx.save();
    ctx.beginPath();
    ctx.rect(m.l, m.t - 2, pw + 2, ph + 4);
    ctx.clip();
    ctx.lineWidth = 1.75;
    ctx.lineJoin = "round";
    for (const s of series) {
      ctx.strokeStyle = s.colour;
      ctx.fillStyle = s.colour;
      ctx.setLineDash(s.dashed ? [5, 4] : []);
      ctx.beginPath();
      let prev = null;
      for (const p of s.values) {
        if (p.v === null) {
          prev = null;
          continue;
        }
        if (prev && p.t - prev.t <= 3 * intervalMs + 500) {
          ctx.lineTo(x(p.t), y(p.v));
        } else {
          ctx.moveTo(x(p.t), y(p.v));
        }
        prev = p;
      }
      ctx.stroke();
      const tail = s.values[s.values.length - 1];
      if (tail && tail.v !== null) {
        ctx.beginPath();
        ctx.arc(x(tail.t), y(tail.v), 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    ctx.restore();
  }

  function drawLegend(chart, series) {
    const ul = $("legend-" + chart.id);
    const items = series.map((s) => {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = s.dashed ? "swatch dashed" : "swatch";
      // CSSOM, not a style attribute: allowed by the page's Content-Security-Policy.
      if (s.dashed) sw.style.borderTopColor = s.colour;
      else sw.style.backgroundColor = s.colour;
      const tail = s.values.length ? s.values[s.values.length - 1].v : null;
      li.append(sw, document.createTextNode(s.label + " " + chart.fmt(tail)));
      return li;
    });
    ul.replaceChildren(...items);
  }

  function drawCharts() {
    for (const chart of CHARTS) drawChart(chart);
  }

  // ---- tables ---------------------------------------------------------------------------

  // A row of cells; each cell is text, or [text, class].
  function row(cells, className) {
    const tr = document.createElement("tr");
    if (className) tr.className = className;
    for (const c of cells) {
      const td = document.createElement("td");
      const [text, cls] = Array.isArray(c) ? c : [c, ""];
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    return tr;
  }

  function fill(tableId, rows) {
    $(tableId).querySelector("tbody").replaceChildren(...rows);
  }

  const PROTOCOLS = { 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp" };

  function endpoint(addr, port) {
    const a = String(addr).includes(":") ? "[" + addr + "]" : String(addr);
    return port ? a + ":" + port : a;
  }

  function flowKey(f) {
    const proto = PROTOCOLS[f.protocol] || "proto " + f.protocol;
    let key = proto + " " + endpoint(f.src, f.src_port) + " → " + endpoint(f.dst, f.dst_port);
    if (f.dscp !== null && f.dscp !== undefined) key += " dscp " + f.dscp;
    return key;
  }

  function renderNics(stats, nics) {
    const rates = new Map((stats.nics || []).map((n) => [n.name, n]));
    fill("nics", (nics || []).map((n) => {
      const r = rates.get(n.name) || {};
      const p = r.rtt_percentiles;
      const link = String(n.link);
      return row([
        n.name,
        n.device,
        [n.transport_open === false ? link + " (closed)" : link, "state-" + link],
        [String(n.admin), n.admin === "down" ? "state-down" : ""],
        [fmt.bits(num(n.capacity_bps)) + (n.capacity_auto ? " (auto)" : ""), "num"],
        [fmt.bits(num(r.tx_bps)), "num"],
        [fmt.bits(num(r.rx_bps)), "num"],
        [fmt.us(num(r.srtt_us ?? n.srtt_us)), "num"],
        [fmt.us(p ? num(p.p99_us) : null), "num"],
        [fmt.ratio(num(r.loss_ratio ?? n.loss_ratio)), "num"],
        [fmt.count(num(n.flows)), "num"],
      ]);
    }));
  }

  function renderFlows(stats, page) {
    const flows = (page.flows || []).slice().sort((a, b) => (b.rate_bps || 0) - (a.rate_bps || 0));
    fill("flows", flows.map((f) => row([
      [String(f.id), "num"],
      f.direction,
      [flowKey(f), "key"],
      f.class ?? "–",
      f.qos_class ?? "–",
      f.policy + (f.pinned ? " (pinned)" : ""),
      (f.nics || []).join(", ") || "–",
      [fmt.bits(num(f.rate_bps)), "num"],
      [fmt.count(num(f.packets)), "num"],
      [fmt.bytes(num(f.bytes)), "num"],
      [fmt.ms(num(f.idle_ms)), "num"],
    ])));
    const counts = stats.flows || {};
    const total = (num(counts.tx) || 0) + (num(counts.rx) || 0);
    const more = page.next_cursor ? "the first " + FLOWS_SHOWN + " by id, " : "";
    $("flows-summary").textContent = "(" + more + flows.length + " shown of " + total +
      ": " + (num(counts.tx) || 0) + " tx, " + (num(counts.rx) || 0) + " rx; busiest first)";
  }

  function renderDrops(stats) {
    const drops = Object.entries(stats.drops || {}).map(([reason, n]) => [reason, num(n) || 0]);
    const nonzero = drops.filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    const zero = drops.filter(([, n]) => n === 0).map(([r]) => r).sort();
    const rows = nonzero.map(([reason, n]) => {
      const before = previousDrops ? previousDrops[reason] || 0 : null;
      const delta = before === null ? "–" : "+" + fmt.count(n - before);
      return row([reason, [fmt.count(n), "num"], [delta, "num"]], "nonzero");
    });
    if (zero.length) {
      const others = zero.length === 1 ? "1 other reason" : zero.length + " other reasons";
      const tr = row([others + ": none", ["0", "num"], ["", "num"]], "zero");
      tr.id = "drops-zero-row";
      tr.title = zero.join(", ");
      rows.push(tr);
    }
    fill("drops", rows);
    previousDrops = Object.fromEntries(drops);
  }

  function renderTotals(stats) {
    const r = stats.reorder || {};
    const a = stats.reassembly || {};
    const hp = r.hold_percentiles;
    const pairs = [
      ["sent (from the vNIC)", fmt.count(num(stats.tx_packets)) + " pkts, " + fmt.bytes(num(stats.tx_bytes))],
      ["delivered (to the vNIC)", fmt.count(num(stats.rx_delivered_packets)) + " pkts, " +
        fmt.bytes(num(stats.rx_delivered_bytes))],
      ["reorder: held now", fmt.count(num(r.held_now))],
      ["reorder: released late", fmt.count(num(r.reordered))],
      ["reorder: gaps (seqs)", fmt.count(num(r.gaps)) + " (" + fmt.count(num(r.gap_seqs)) + ")"],
      ["reorder: longest hold", fmt.us(num(r.max_hold_us)) +
        (hp ? ", p99 " + fmt.us(num(hp.p99_us)) : "")],
      ["reassembled", fmt.count(num(a.completed))],
      ["reassembly given up", fmt.count(num(a.dropped))],
      ["reassembly held", fmt.bytes(num(a.held_bytes))],
    ];
    fill("totals", pairs.map(([k, v]) => row([k, [v, "num"]])));
  }

  function render() {
    if (!latest) return;
    renderNics(latest.stats, latest.nics);
    renderFlows(latest.stats, latest.flows);
    renderDrops(latest.stats);
    renderTotals(latest.stats);
  }

  // ---- status ---------------------------------------------------------------------------

  function showStatus() {
    const when = lastUpdate ? "updated " + lastUpdate.toLocaleTimeString("en-GB") : "no data yet";
    const every = "every " + sig(intervalMs / 1000) + " s";
    const measured = latest ? ", daemon rates over " + fmt.ms(num(latest.stats.interval_ms)) : "";
    $("status").textContent = when + " · " + (paused ? "paused" : every) + " · " + updates +
      " updates, " + errors + " errors" + measured;
    document.body.dataset.updates = String(updates);
    document.body.dataset.errors = String(errors);
  }

  function showError(text) {
    const e = $("error");
    e.textContent = text;
    e.hidden = !text;
  }

  function showLogin(reason) {
    $("login-reason").textContent = reason;
    $("login").hidden = false;
    $("token").focus();
  }

  // ---- polling --------------------------------------------------------------------------

  class ApiFailure extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  async function getJson(path) {
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    try {
      const r = await fetch(path, {
        headers: { Authorization: "Bearer " + token, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
        signal: abort.signal,
      });
      if (!r.ok) {
        let message = r.statusText;
        try {
          const body = await r.json();
          if (body && body.error && body.error.message) message = body.error.message;
        } catch (_) { /* not the API's error shape */ }
        throw new ApiFailure(r.status, path + ": " + r.status + " " + message,
          r.headers.get("Retry-After"));
      }
      return await r.json();
    } catch (e) {
      if (e instanceof ApiFailure) throw e;
      const why = e && e.name === "AbortError" ? "no answer within " + REQUEST_TIMEOUT_MS / 1000 + " s"
        : String(e && e.message ? e.message : e);
      throw new ApiFailure(0, path + ": " + why, null);
    } finally {
      clearTimeout(timeout);
    }
  }

  function record(stats, nics, flows) {
    const sample = { t: Date.now(), nics: new Map() };
    for (const n of stats.nics || []) {
      const p = n.rtt_percentiles;
      sample.nics.set(n.name, {
        tx: num(n.tx_bps),
        rx: num(n.rx_bps),
        srtt: num(n.srtt_us),
        p99: p ? num(p.p99_us) : null,
        loss: num(n.loss_ratio),
      });
    }
    samples.push(sample);
    if (samples.length > points) samples.splice(0, samples.length - points);
    latest = { stats, nics, flows };
  }

  function schedule(delayMs) {
    clearTimeout(timer);
    timer = paused || !token ? null : setTimeout(poll, Math.max(0, delayMs));
  }

  async function poll() {
    timer = null;
    if (!token) {
      setState("no-token");
      showLogin("No token yet: enter the API token to start.");
      return;
    }
    const started = Date.now();
    try {
      // /v1/stats first and alone: a wrong token then costs one failed authentication
      // against the daemon's rate limit, not three.
      const stats = await getJson(ENDPOINTS.stats);
      const [nics, flows] = await Promise.all([getJson(ENDPOINTS.nics), getJson(ENDPOINTS.flows)]);
      record(stats, nics, flows);
      updates += 1;
      lastUpdate = new Date();
      showError("");
      $("login").hidden = true;
      render();
      drawCharts();
      setState(paused ? "paused" : "ok");
    } catch (e) {
      errors += 1;
      if (e.status === 401) {
        token = null;
        store.remove(TOKEN_KEY);
        setState("unauthorized");
        showError("The daemon refused the token (401 unauthorized).");
        showLogin("The daemon refused the token: enter the one in the daemon's token file " +
          "([api] token_file). Each refusal counts against the daemon's rate limit.");
        showStatus();
        drawCharts();
        return;
      }
      let wait = intervalMs;
      if (e.status === 429) {
        const s = clampInt(e.retryAfter, 1, 3600, 60);
        wait = s * 1000;
        showError("Rate limited (429): too many failed authentications from this address; " +
          "retrying in " + s + " s.");
      } else {
        showError((e.message || String(e)) + " (retrying)");
      }
      setState("error");
      showStatus();
      schedule(wait);
      return;
    }
    showStatus();
    schedule(intervalMs - (Date.now() - started));
  }

  // ---- controls -------------------------------------------------------------------------

  function start() {
    const select = $("interval");
    if (![...select.options].some((o) => Number(o.value) === intervalMs)) {
      select.add(new Option(sig(intervalMs / 1000) + " s", String(intervalMs)));
    }
    select.value = String(intervalMs);
    select.addEventListener("change", () => {
      intervalMs = clampInt(select.value, MIN_INTERVAL_MS, MAX_INTERVAL_MS, DEFAULT_INTERVAL_MS);
      store.set(INTERVAL_KEY, String(intervalMs));
      showStatus();
      drawCharts();
      if (timer !== null) schedule(0);
    });
    $("pause").addEventListener("click", () => {
      paused = !paused;
      $("pause").textContent = paused ? "resume" : "pause";
      if (paused) setState("paused");
      showStatus();
      if (paused) clearTimeout(timer);
      else schedule(0);
    });
    $("forget").addEventListener("click", () => {
      token = null;
      store.remove(TOKEN_KEY);
      clearTimeout(timer);
      timer = null;
      setState("no-token");
      showLogin("Token forgotten: enter it again to resume.");
    });
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = $("token");
      const t = input.value.trim();
      input.value = "";
      if (!t) return;
      token = t;
      store.set(TOKEN_KEY, t);
      $("login").hidden = true;
      showError("");
      schedule(0);
    });
    let pending = false;
    window.addEventListener("resize", () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        drawCharts();
      });
    });
    drawCharts();
    showStatus();
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
