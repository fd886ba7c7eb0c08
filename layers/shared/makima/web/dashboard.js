/* makima contracts: the web console's core, and its dashboard view.
 *
 * This file holds what every view shares (configuration, the token, the API, the one WebSocket monitor,
 * the hash router, DOM helpers) and exposes it as window.makima for the other views: contracts.js (the
 * contract list, #/contracts) and contract.js (a contract's page and its actions, #/contracts/<id>).
 * The dashboard itself is #/ (the default).
 *
 * Shows GET /api/v1/contracts/dashboard and follows the WebSocket monitor
 * (/api/v1/contracts/monitor): each event is prepended to "Recent events" and the dashboard is fetched
 * again (debounced), so counts and lists follow the fleet without a reload.
 *
 * The API is the page's own origin unless the server that serves the page configured others (a
 * <meta name="makima-dashboard"> it inserts; its CSP connect-src allows exactly those): a link's ?api= and
 * ?ws= may only choose among them, and an unknown one is ignored with a visible warning. The token comes
 * from the sign-in form only (kept in sessionStorage for the tab); a ?token= in a link is removed and
 * ignored. The form names the API and monitor the token will go to.
 *
 * Every piece of data reaches the page through textContent or an attribute: no HTML is ever built
 * from strings.
 */
(function () {
  "use strict";

  var STATUSES = [
    "created", "active", "waiting_for_input", "paused", "blocked",
    "completing", "completed", "failed", "archived",
  ];
  var STATUS_COLORS = {
    created: "#94a3b8", active: "#2563eb", waiting_for_input: "#f59e0b", paused: "#64748b",
    blocked: "#ea580c", completing: "#0d9488", completed: "#16a34a", failed: "#dc2626", archived: "#cbd5e1",
  };
  var PHASE_ORDER = ["research", "specify", "plan", "execute", "review"];
  var WAITING_LABELS = {
    question: "Question", phase_confirmation: "Phase confirmation",
    completion_confirmation: "Completion confirmation",
  };
  var MAX_EVENTS = 60;
  var REFRESH_DEBOUNCE_MS = 300;
  var REFRESH_MAX_WAIT_MS = 1500;
  var PING_MS = 30000;
  var POLL_WHEN_NOT_LIVE_MS = 15000;
  var TOKEN_KEY = "makima.token";
  var SVG_NS = "http://www.w3.org/2000/svg";

  // --- configuration: API base, WebSocket URL, token ------------------------------------------------

  var params = new URLSearchParams(window.location.search);

  function store(key, value) {
    try {
      if (value === null) window.sessionStorage.removeItem(key);
      else window.sessionStorage.setItem(key, value);
    } catch (e) { /* storage disabled: the token lives for this page only */ }
  }

  function stored(key) {
    try { return window.sessionStorage.getItem(key); } catch (e) { return null; }
  }

  function normaliseApi(raw) {
    if (!raw) return "";
    var url;
    try { url = new URL(raw, window.location.href); } catch (e) { return ""; }
    if (url.protocol !== "http:" && url.protocol !== "https:") return "";
    if (url.username || url.password) return "";
    var path = url.pathname.replace(/\/+$/, "").replace(/\/api\/v1$/, "");
    return url.origin + path;
  }

  function normaliseMonitor(raw) {
    if (!raw) return "";
    var url;
    try { url = new URL(raw); } catch (e) { return ""; }
    if (url.protocol !== "ws:" && url.protocol !== "wss:") return "";
    if (url.username || url.password || url.search || url.hash) return "";
    return url.protocol + "//" + url.host + url.pathname.replace(/\/+$/, "");
  }

  function monitorOf(base) { return base.replace(/^http/, "ws") + "/api/v1/contracts/monitor"; }

  // The origins this deployment allows, written into the page by the server that serves it
  // (makima.local.web) and enforced by its connect-src. A page without them uses its own origin only.
  function deployment() {
    var meta = document.querySelector('meta[name="makima-dashboard"]');
    var config = {};
    try { config = meta ? JSON.parse(meta.getAttribute("content")) || {} : {}; } catch (e) { config = {}; }
    return {
      api: normaliseApi(config.api || ""),
      monitor: normaliseMonitor(config.monitor || ""),
      apis: (config.apis || []).map(normaliseApi).filter(Boolean),
      monitors: (config.monitors || []).map(normaliseMonitor).filter(Boolean),
    };
  }

  function unique(list) { return list.filter(function (v, i) { return v && list.indexOf(v) === i; }); }

  var linkWarnings = [];
  var config = deployment();
  var pageOrigin = /^https?:$/.test(window.location.protocol) ? window.location.origin : "";
  var defaultApi = config.api || pageOrigin;
  var allowedApis = unique([defaultApi, pageOrigin].concat(config.apis));
  var apiBase = defaultApi;
  // ?api= and ?ws= may only choose among what the deployment allows: a link names any host it likes, and
  // the token pasted into the genuine page must never follow it there.
  var askedApi = params.get("api");
  if (askedApi) {
    if (allowedApis.indexOf(normaliseApi(askedApi)) >= 0) apiBase = normaliseApi(askedApi);
    else linkWarnings.push("This link asked for the API at " + askedApi + ", which this dashboard is not configured to use: ignored.");
  }
  var defaultMonitor = apiBase === defaultApi && config.monitor ? config.monitor : (apiBase ? monitorOf(apiBase) : "");
  var allowedMonitors = unique([config.monitor].concat(config.monitors, allowedApis.map(monitorOf)));
  var monitorBase = defaultMonitor;
  var askedWs = params.get("ws");
  if (askedWs) {
    if (allowedMonitors.indexOf(normaliseMonitor(askedWs)) >= 0) monitorBase = normaliseMonitor(askedWs);
    else linkWarnings.push("This link asked for the monitor at " + askedWs + ", which this dashboard is not configured to use: ignored.");
  }

  // A token in a link is never used: a link could sign the reader in as someone else (showing them an
  // attacker's contracts, questions and all), and a URL leaks into history and logs. It leaves the
  // address bar at once; the reader pastes their own token into the form.
  if (params.has("token")) {
    params.delete("token");
    var rest = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : "") + window.location.hash);
    linkWarnings.push("This link carried a token: it was ignored and removed from the address. Sign in by pasting your own token.");
  }
  var token = stored(TOKEN_KEY);

  // --- state ----------------------------------------------------------------------------------------

  var session = 0; // bumped on sign-out: late answers of an old session are dropped
  var events = new Map(); // id -> normalised event
  var names = new Map(); // contract id -> name
  var lookups = new Set(); // contract ids being (or already) looked up
  var lastData = null;
  var lastEventId = 0; // the newest logged event id seen: what a reconnect resumes from
  var connState = "offline";

  // --- DOM helpers ----------------------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function testid(node, value) { node.setAttribute("data-testid", value); return node; }

  // The page has a <base href="/dashboard/">, against which a bare "#/contracts" would resolve to another
  // document (/dashboard/ is not /dashboard): every in-page link names this document explicitly, so
  // following it only changes the hash.
  function here(hash) { return window.location.pathname + window.location.search + hash; }

  function link(href, className, text) {
    var a = el("a", className, text);
    a.setAttribute("href", href.charAt(0) === "#" ? here(href) : href);
    return a;
  }

  document.querySelectorAll('a[href^="#"]').forEach(function (a) { a.setAttribute("href", here(a.getAttribute("href"))); });

  function contractHref(id, query) {
    var q = new URLSearchParams(query || {}).toString();
    return "#/contracts/" + encodeURIComponent(id) + (q ? "?" + q : "");
  }

  function humanise(word) {
    if (!word) return "";
    var s = String(word).replace(/_/g, " ");
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  function plain(word) { return word ? String(word).replace(/_/g, " ") : ""; }

  function shortId(id) { return id ? String(id).slice(0, 8) : ""; }

  function contractLabel(id) {
    if (!id) return "—";
    return names.get(String(id)) || "contract " + shortId(id);
  }

  function ago(date) {
    var secs = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
    if (secs < 10) return "just now";
    if (secs < 60) return secs + " s ago";
    var mins = Math.floor(secs / 60);
    if (mins < 60) return mins + " min ago";
    var hours = Math.floor(mins / 60);
    if (hours < 24) return hours + " h ago";
    return date.toLocaleDateString();
  }

  function idle(secs) {
    var mins = Math.floor(secs / 60);
    if (mins < 120) return "idle " + mins + " min";
    var hours = Math.floor(mins / 60);
    if (hours < 48) return "idle " + hours + " h " + (mins % 60) + " min";
    return "idle " + Math.floor(hours / 24) + " days";
  }

  function when(date) {
    var today = new Date().toDateString() === date.toDateString();
    var time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return today ? "today " + time : date.toLocaleDateString() + " " + time;
  }

  function clock(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  // --- API ------------------------------------------------------------------------------------------

  function ApiError(status, code, message, details) {
    this.status = status;
    this.code = code || "HTTP_" + status;
    this.message = message || "HTTP " + status;
    this.details = details || {};
  }

  // GET path, or send body (JSON) with method. A change is never retried by the page: a 409 is shown.
  function api(path, method, body) {
    var headers = { Authorization: "Bearer " + token, Accept: "application/json" };
    var init = { headers: headers, cache: "no-store", credentials: "omit", method: method || "GET" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(apiBase + "/api/v1" + path, init).then(function (res) {
      return res.json().catch(function () { return null; }).then(function (body) {
        if (!res.ok) {
          var err = body && body.error ? body.error : {};
          var apiErr = new ApiError(res.status, err.code, err.message, err.details);
          if (res.status === 401 && token) signOut("The API refused this token (" + apiErr.message + ").");
          throw apiErr;
        }
        return body;
      });
    });
  }

  // --- the dashboard: fetch, debounced re-fetch -------------------------------------------------------

  var refreshTimer = null;
  var refreshFirstAsked = 0;
  var refreshing = false;
  var refreshAgain = false;

  var dashboardStale = false; // an event came while another view was shown

  function scheduleRefresh() {
    // Only the dashboard view shows what /contracts/dashboard says: the others re-read their own data.
    if (currentView && currentView !== "dashboard") { dashboardStale = true; return; }
    var now = Date.now();
    if (refreshTimer === null) refreshFirstAsked = now;
    else clearTimeout(refreshTimer);
    // Debounced, but never postponed past REFRESH_MAX_WAIT_MS: a busy fleet still sees its counts move.
    var wait = Math.max(0, Math.min(REFRESH_DEBOUNCE_MS, refreshFirstAsked + REFRESH_MAX_WAIT_MS - now));
    refreshTimer = setTimeout(function () { refreshTimer = null; refresh(); }, wait);
  }

  function refresh() {
    if (refreshing) { refreshAgain = true; return Promise.resolve(false); }
    refreshing = true;
    var mine = session;
    return api("/contracts/dashboard").then(function (data) {
      if (mine !== session) return false;
      lastData = data;
      render(data);
      $("updated").textContent = "Updated " + clock(new Date());
      hideBanner();
      return true;
    }, function (err) {
      if (mine !== session) return false;
      failed(err);
      return false;
    }).then(function (ok) {
      refreshing = false;
      if (refreshAgain) { refreshAgain = false; scheduleRefresh(); }
      return ok;
    });
  }

  function failed(err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut("The API refused this token (" + err.message + ").");
    } else if (err instanceof ApiError && err.code === "FEATURE_DISABLED") {
      showBanner("The monitoring dashboard is switched off (feature flag monitoring_dashboard).");
    } else if (err instanceof ApiError) {
      showBanner("The dashboard API answered " + err.status + " " + err.code + ": " + err.message);
    } else {
      showBanner("Cannot reach the API at " + apiBase + ". Retrying…");
    }
  }

  function showBanner(text) { var b = $("banner"); b.textContent = text; b.hidden = false; }
  function hideBanner() { $("banner").hidden = true; }

  // --- rendering ------------------------------------------------------------------------------------

  function render(data) {
    (data.staleContracts || []).forEach(function (c) { names.set(String(c.id), c.name); });
    (data.waitingForInput || []).forEach(function (c) { names.set(String(c.id), c.name); });
    (data.recentEvents || []).forEach(function (e) { addEvent(fromApi(e), false); });
    renderKpis(data);
    renderStatusChart(data.statusCounts || {});
    renderPhaseChart(data.phaseCounts || {});
    renderWaiting(data.waitingForInput || []);
    renderStale(data.staleContracts || []);
    renderEvents();
  }

  function renderKpis(data) {
    var usage = data.resourceUsage || {};
    document.querySelectorAll("[data-testid^='kpi-']").forEach(function (node) {
      var key = node.getAttribute("data-testid").slice(4);
      if (key in usage) node.textContent = String(usage[key]);
    });
    var counts = data.statusCounts || {};
    var total = 0;
    Object.keys(counts).forEach(function (k) { total += counts[k]; });
    $("kpi-contracts").textContent = String(total);
    var working = 0;
    ["active", "waiting_for_input", "completing"].forEach(function (k) { working += counts[k] || 0; });
    $("kpi-contracts-note").textContent = working + " in progress · " + (counts.completed || 0) + " completed";
    $("status-total").textContent = total + " total";
  }

  // The top of the scale: four gridline steps of 1, 2, 3 or 5 × 10^k, so every tick is a whole number.
  function niceMax(max) {
    var raw = Math.max(1, max) / 4;
    var p = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 3, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= raw) return Math.max(4, Math.ceil(steps[i] * p) * 4);
    return 40 * p;
  }

  function chartWidth(node, fallback) {
    return Math.max(260, Math.floor(node.clientWidth || fallback));
  }

  function renderStatusChart(counts) {
    var host = $("status-chart");
    var keys = STATUSES.concat(Object.keys(counts).filter(function (k) { return STATUSES.indexOf(k) < 0; }));
    var width = chartWidth(host, 420);
    var rowH = 26;
    var labelW = 132;
    var countW = 44;
    var trackW = width - labelW - countW;
    var height = keys.length * rowH;
    var max = 0;
    keys.forEach(function (k) { max = Math.max(max, counts[k] || 0); });
    var chart = svg("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height, role: "img" });
    chart.appendChild(svg("title", {}, "Contracts by status"));
    keys.forEach(function (k, i) {
      var n = counts[k] || 0;
      var y = i * rowH;
      var g = svg("g", { "data-status": k, "data-count": n, class: n ? "row" : "row zero" });
      g.appendChild(svg("title", {}, humanise(k) + ": " + n));
      g.appendChild(svg("text", { x: 0, y: y + rowH / 2, class: "axis-label", "dominant-baseline": "central" }, plain(k)));
      g.appendChild(svg("rect", { x: labelW, y: y + 6, width: trackW, height: rowH - 12, rx: 4, class: "track" }));
      var w = n && max ? Math.max(4, Math.round((n / max) * trackW)) : 0;
      if (w) {
        g.appendChild(svg("rect", {
          x: labelW, y: y + 6, width: w, height: rowH - 12, rx: 4, fill: STATUS_COLORS[k] || "#6366f1", class: "bar",
        }));
      }
      g.appendChild(svg("text", {
        x: width, y: y + rowH / 2, "text-anchor": "end", "dominant-baseline": "central", class: "value",
      }, n));
      chart.appendChild(g);
    });
    host.replaceChildren(chart);
  }

  function renderPhaseChart(counts) {
    var host = $("phase-chart");
    var extra = Object.keys(counts).filter(function (k) { return PHASE_ORDER.indexOf(k) < 0; }).sort();
    var keys = PHASE_ORDER.concat(extra);
    var width = chartWidth(host, 420);
    var height = STATUSES.length * 26;
    var top = 22;
    var bottom = 28;
    var left = 28;
    var plotH = height - top - bottom;
    var max = 0;
    keys.forEach(function (k) { max = Math.max(max, counts[k] || 0); });
    var scale = niceMax(max);
    var chart = svg("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height, role: "img" });
    chart.appendChild(svg("title", {}, "Contracts by phase"));
    for (var t = 0; t <= 4; t++) {
      var gy = top + plotH - (plotH * t) / 4;
      chart.appendChild(svg("line", { x1: left, x2: width, y1: gy, y2: gy, class: t ? "grid" : "baseline" }));
      chart.appendChild(svg("text", {
        x: left - 8, y: gy, "text-anchor": "end", "dominant-baseline": "central", class: "tick",
      }, (scale * t) / 4));
    }
    var slot = (width - left) / keys.length;
    var barW = Math.min(56, slot * 0.56);
    keys.forEach(function (k, i) {
      var n = counts[k] || 0;
      var x = left + slot * i + (slot - barW) / 2;
      var h = n ? Math.max(3, (n / scale) * plotH) : 0;
      var g = svg("g", { "data-phase": k, "data-count": n, class: n ? "col" : "col zero" });
      g.appendChild(svg("title", {}, humanise(k) + ": " + n));
      if (h) g.appendChild(svg("rect", { x: x, y: top + plotH - h, width: barW, height: h, rx: 4, class: "column" }));
      g.appendChild(svg("text", {
        x: x + barW / 2, y: top + plotH - h - 7, "text-anchor": "middle", class: "value",
      }, n));
      g.appendChild(svg("text", {
        x: x + barW / 2, y: height - 8, "text-anchor": "middle", class: "axis-label",
      }, plain(k)));
      chart.appendChild(g);
    });
    host.replaceChildren(chart);
  }

  function emptyItem(text) { return el("li", "empty", text); }

  function renderWaiting(rows) {
    $("waiting-count").textContent = String(rows.length);
    var list = $("waiting-list");
    if (!rows.length) { list.replaceChildren(emptyItem("Nobody is waiting for an answer.")); return; }
    list.replaceChildren.apply(list, rows.map(function (c) {
      var li = el("li", "item");
      li.setAttribute("data-contract-id", c.id);
      var body = el("div", "item-body");
      // "Waiting for input" opens the contract with its answer box (or the phase confirmation) ready.
      body.appendChild(link(contractHref(c.id, { answer: "1" }), "item-title", c.name));
      var what = c.question || (c.waitingFor && !WAITING_LABELS[c.waitingFor] ? c.waitingFor : "");
      if (what) body.appendChild(el("div", "item-sub", what));
      li.appendChild(body);
      li.appendChild(el("span", "tag tag-amber", WAITING_LABELS[c.waitingFor] || "Input"));
      return li;
    }));
  }

  function renderStale(rows) {
    $("stale-count").textContent = String(rows.length);
    var list = $("stale-list");
    if (!rows.length) { list.replaceChildren(emptyItem("No stale contracts: everything is moving.")); return; }
    list.replaceChildren.apply(list, rows.map(function (c) {
      var li = el("li", "item");
      li.setAttribute("data-contract-id", c.id);
      var body = el("div", "item-body");
      body.appendChild(link(contractHref(c.id), "item-title", c.name));
      var last = new Date(c.lastActivity);
      var sub = el("div", "item-sub", "last activity " + when(last));
      body.appendChild(sub);
      li.appendChild(body);
      li.appendChild(el("span", "tag tag-red", idle(c.staleDurationSecs || 0)));
      return li;
    }));
  }

  // --- events ---------------------------------------------------------------------------------------

  function fromApi(e) {
    var data = Object.assign({}, e.payload || {});
    delete data.contract_id;
    return { id: String(e.id), type: e.type, contract_id: e.contract_id, actor: e.actor, time: e.created_at, data: data };
  }

  function fromMonitor(m) {
    return {
      id: String(m.id), type: m.type, contract_id: m.contract_id, actor: m.actor, time: m.timestamp,
      data: m.data || {},
    };
  }

  function addEvent(e, live) {
    if (!e.id || events.has(e.id)) return false;
    e.at = new Date(e.time);
    if (isNaN(e.at.getTime())) e.at = new Date();
    e.fresh = live;
    events.set(e.id, e);
    if (/^\d+$/.test(e.id)) lastEventId = Math.max(lastEventId, Number(e.id));
    if (e.type === "contract_created" && e.contract_id && e.data.name) names.set(String(e.contract_id), e.data.name);
    if (events.size > MAX_EVENTS) {
      sortedEvents().slice(MAX_EVENTS).forEach(function (old) { events.delete(old.id); });
    }
    return true;
  }

  function sortedEvents() {
    return Array.from(events.values()).sort(function (a, b) {
      var d = b.at.getTime() - a.at.getTime();
      if (d) return d;
      var na = Number(a.id), nb = Number(b.id);
      return isNaN(na) || isNaN(nb) ? 0 : nb - na;
    });
  }

  function arrow(a, b) { return plain(a || "?") + " → " + plain(b || "?"); }

  function describe(e) {
    var d = e.data || {};
    switch (e.type) {
      case "status_changed": return arrow(d.old_status, d.new_status) + (d.reason ? " · " + d.reason : "");
      case "phase_changed": return arrow(d.old_phase, d.new_phase) + (d.auto ? " (auto)" : "");
      case "supervisor_state_changed":
        return arrow(d.old_state, d.new_state) + (d.recovered ? " · recovered" : "") + (d.reason ? " · " + d.reason : "");
      case "contract_created": return (d.contract_type || "") + (d.phase ? " · " + d.phase : "");
      case "task_spawned": case "task_started": return d.task_name || "";
      case "task_completed": return (d.task_name || "") + (d.success === false ? " · failed" : "");
      case "deliverable_completed": return (d.deliverable_id || "") + (d.phase ? " · " + d.phase : "");
      case "question_asked": return d.question || "";
      case "stale_detected": return d.stale_duration_secs ? idle(d.stale_duration_secs) : "";
      case "supervisor_restored": return (d.mode || "") + (d.generation ? " · generation " + d.generation : "");
      case "phase_ready": return arrow(d.phase, d.next_phase);
      case "completion_detected": return d.phase || "";
      case "heartbeat": return plain(d.state) + (d.progress !== undefined ? " · " + d.progress + "%" : "");
      case "chat_message": return d.role || "";
      default: return "";
    }
  }

  function category(type) {
    if (type === "status_changed") return "status";
    if (type === "phase_changed" || type === "phase_ready") return "phase";
    if (type.indexOf("supervisor") === 0 || type === "heartbeat") return "supervisor";
    if (type.indexOf("task_") === 0) return "task";
    if (type.indexOf("question") === 0) return "question";
    if (type === "stale_detected") return "stale";
    if (type === "deliverable_completed" || type.indexOf("completion") === 0 || type === "cleanup_completed") return "done";
    if (type === "contract_created") return "created";
    return "other";
  }

  function actorKind(actor) { return actor ? String(actor).split(":", 1)[0] : ""; }

  var eventsFrame = 0;
  function renderEventsSoon() {
    if (eventsFrame) return;
    eventsFrame = window.requestAnimationFrame(function () { eventsFrame = 0; renderEvents(); });
  }

  function renderEvents() {
    var list = $("events");
    var rows = sortedEvents();
    if (!rows.length) { list.replaceChildren(emptyItem("No events yet.")); return; }
    var unknown = [];
    list.replaceChildren.apply(list, rows.map(function (e) {
      var li = el("li", "event cat-" + category(e.type) + (e.fresh ? " fresh" : ""));
      e.fresh = false;
      li.setAttribute("data-event-id", e.id);
      li.setAttribute("data-type", e.type);
      if (e.contract_id) li.setAttribute("data-contract-id", e.contract_id);
      li.appendChild(el("span", "event-dot"));
      var body = el("div", "event-body");
      var head = el("div", "event-head");
      head.appendChild(el("span", "event-type", humanise(e.type)));
      var detail = describe(e);
      if (detail) head.appendChild(el("span", "event-detail", detail));
      body.appendChild(head);
      var meta = el("div", "event-meta");
      if (e.contract_id) meta.appendChild(link(contractHref(e.contract_id), "event-contract", contractLabel(e.contract_id)));
      else meta.appendChild(el("span", "event-contract", contractLabel(e.contract_id)));
      var who = actorKind(e.actor);
      if (who) { meta.appendChild(el("span", "sep", "·")); meta.appendChild(el("span", "event-actor", who)); }
      body.appendChild(meta);
      li.appendChild(body);
      var time = el("time", "event-time", ago(e.at));
      time.setAttribute("datetime", e.at.toISOString());
      time.title = e.at.toLocaleString();
      li.appendChild(time);
      if (e.contract_id && !names.has(String(e.contract_id))) unknown.push(String(e.contract_id));
      return li;
    }));
    lookUpNames(unknown);
  }

  function lookUpNames(ids) {
    var mine = session;
    ids.forEach(function (id) {
      if (lookups.has(id) || lookups.size > 500) return;
      lookups.add(id);
      api("/contracts/" + encodeURIComponent(id)).then(function (c) {
        if (mine !== session || !c || !c.name) return;
        names.set(id, c.name);
        renderEventsSoon();
      }, function () { /* gone or not ours: the short id stays */ });
    });
  }

  function loadNames() {
    var mine = session;
    return api("/contracts?limit=200").then(function (body) {
      if (mine !== session) return;
      (body.contracts || []).forEach(function (c) { names.set(String(c.id), c.name); lookups.add(String(c.id)); });
      renderEventsSoon();
    }, function () { /* names are a nicety */ });
  }

  // --- the WebSocket monitor --------------------------------------------------------------------------

  var ws = null;
  var attempts = 0;
  var reconnectTimer = null;
  var pingTimer = null;

  function setConn(state, detail) {
    connState = state;
    var node = $("conn");
    node.setAttribute("data-state", state);
    var labels = { connecting: "Connecting", live: "Live", reconnecting: "Reconnecting", offline: "Offline" };
    $("conn-label").textContent = labels[state] || state;
    node.title = detail || "";
  }

  var CLOSE_UNAUTHORIZED = 4401;

  // One socket for every view. On a contract's page it is narrowed to that contract, heartbeats included
  // (for its chart); back on the fleet views it widens again, resuming from where the narrowing began so
  // that no other contract's event is lost (the replay is de-duplicated by id).
  var focus = null; // the contract id the monitor is narrowed to
  var focusMark = 0; // lastEventId when it was narrowed

  function monitorFilter(after) {
    var filter = { include_stale: true, include_heartbeats: !!focus };
    if (focus) filter.contract_ids = [focus];
    if (after) filter.last_event_id = String(after);
    return filter;
  }

  function focusMonitor(contractId) {
    contractId = contractId || null;
    if (contractId === focus) return;
    var resumeFrom = focus && !contractId ? focusMark : lastEventId;
    if (!focus) focusMark = lastEventId;
    focus = contractId;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(monitorFilter(resumeFrom)));
  }

  function monitorUrl() {
    var url = new URL(monitorBase);
    url.searchParams.set("token", token);
    return url.toString();
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    setConn(attempts ? "reconnecting" : "connecting");
    var sock;
    try {
      sock = new WebSocket(monitorUrl());
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onopen = function () { sock.send(JSON.stringify(monitorFilter(lastEventId))); };
    sock.onmessage = function (msg) {
      if (ws !== sock) return;
      var m;
      try { m = JSON.parse(msg.data); } catch (e) { return; }
      onMessage(m);
    };
    sock.onclose = function (ev) {
      if (ws !== sock) return;
      ws = null;
      clearInterval(pingTimer);
      // 4401: the token was revoked (or refused) while the monitor was open. Reconnecting would only be
      // refused again: sign out, so the page stops showing data the token may no longer read.
      if (ev && ev.code === CLOSE_UNAUTHORIZED) { signOut("The token was revoked: sign in again."); return; }
      scheduleReconnect();
    };
  }

  function onMessage(m) {
    if (!m || typeof m !== "object") return;
    if (m.type === "subscribed") {
      attempts = 0;
      setConn("live", "Subscribed to the monitor");
      clearInterval(pingTimer);
      pingTimer = setInterval(function () {
        if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ action: "ping" }));
      }, PING_MS);
      scheduleRefresh();
      return;
    }
    if (m.type === "pong") return;
    if (m.type === "replayed") {
      // The server read the log this far with the page's filter: a later resume starts here.
      if (/^\d+$/.test(String(m.last_event_id))) lastEventId = Math.max(lastEventId, Number(m.last_event_id));
      if (m.count) $("conn").title = "Resumed: " + m.count + " missed events replayed";
      return;
    }
    if (m.type === "reload") {
      // The server cut the replay short (too far behind, too many events, its deadline): the socket is
      // live; what was missed comes from a fresh snapshot, and a later reconnect resumes from the head.
      if (/^\d+$/.test(String(m.last_event_id))) lastEventId = Math.max(lastEventId, Number(m.last_event_id));
      $("conn").title = "Missed events not replayed (" + (m.reason || "limit") + "): reloaded the dashboard";
      refresh();
      notify({ type: "reload" });
      return;
    }
    if (m.type === "error" && m.code === "UNAUTHORIZED") {
      signOut("The token was revoked: sign in again.");
      return;
    }
    if (m.type === "error") {
      showBanner("Monitor: " + (m.code || "error") + (m.message ? ": " + m.message : ""));
      return;
    }
    if (m.id === undefined || !m.type) return;
    var e = fromMonitor(m);
    // Heartbeats (ids "hb:…", not logged) feed the contract page only, never the fleet's event list.
    if (m.type !== "heartbeat" && addEvent(e, true)) {
      renderEventsSoon();
      scheduleRefresh();
    }
    notify(e);
  }

  var listeners = [];
  function notify(e) {
    listeners.forEach(function (fn) { try { fn(e); } catch (err) { window.setTimeout(function () { throw err; }); } });
  }

  function scheduleReconnect() {
    if (!token) { setConn("offline"); return; }
    attempts += 1;
    var delay = Math.min(30000, 1000 * Math.pow(2, attempts - 1)) * (0.75 + Math.random() * 0.5);
    setConn("reconnecting", "Next attempt in " + Math.round(delay / 1000) + " s");
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, delay);
  }

  function disconnect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    clearInterval(pingTimer);
    var sock = ws;
    ws = null;
    if (sock) sock.close(1000, "signed out");
    attempts = 0;
    setConn("offline");
  }

  // --- sign-in, start, sign-out ------------------------------------------------------------------------

  function showLogin(message) {
    $("app").hidden = true;
    $("foot").hidden = true;
    $("signout").hidden = true;
    hideBanner();
    // Where a pasted token goes, in plain text, before it is pasted.
    $("login-target-api").textContent = apiBase ? apiBase + "/api/v1" : "(none: this page has no API configured)";
    $("login-target-monitor").textContent = monitorBase || "(none)";
    if (!apiBase) message = message || "This page has no API configured: open it from the makima server.";
    var error = $("login-error");
    error.textContent = message || "";
    error.hidden = !message;
    $("login").hidden = false;
    $("login-token").focus();
  }

  function signOut(message) {
    session += 1;
    token = null;
    store(TOKEN_KEY, null);
    disconnect();
    events.clear();
    lookups.clear();
    lastEventId = 0;
    lastData = null;
    focus = null;
    focusMark = 0;
    Object.keys(views).forEach(function (name) { views[name].reset(); });
    currentView = null;
    showLogin(message);
  }

  // --- views and the hash router ---------------------------------------------------------------------
  // #/ the dashboard; #/contracts[?filters] the list; #/contracts/<id>[?answer=1] a contract's page.

  var views = {
    dashboard: {
      show: function () {
        if (lastData) render(lastData);
        if (dashboardStale) { dashboardStale = false; refresh(); }
      },
      hide: function () {},
      reset: function () { dashboardStale = false; },
    },
  };
  var currentView = null;

  function parseHash() {
    var hash = window.location.hash.replace(/^#/, "") || "/";
    var q = hash.indexOf("?");
    var path = q >= 0 ? hash.slice(0, q) : hash;
    var query = new URLSearchParams(q >= 0 ? hash.slice(q + 1) : "");
    var parts = path.split("/").filter(Boolean);
    if (parts[0] === "contracts" && parts[1]) {
      var id = "";
      try { id = decodeURIComponent(parts[1]); } catch (e) { id = parts[1]; }
      return { name: "contract", arg: id, query: query };
    }
    if (parts[0] === "contracts") return { name: "contracts", arg: null, query: query };
    return { name: "dashboard", arg: null, query: query };
  }

  function route(moveFocus) {
    if (!token) return;
    var where = parseHash();
    var view = views[where.name] ? where.name : "dashboard";
    if (currentView && currentView !== view) views[currentView].hide();
    currentView = view;
    Object.keys(views).forEach(function (name) {
      var section = $("view-" + name);
      if (section) section.hidden = name !== view;
    });
    document.querySelectorAll("[data-nav]").forEach(function (a) {
      var here = a.getAttribute("data-nav") === (view === "contract" ? "contracts" : view);
      if (here) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    focusMonitor(view === "contract" ? where.arg : null);
    views[view].show(where.arg, where.query);
    if (moveFocus) {
      // Screen readers hear the new view's heading; keyboard users start from it.
      var heading = document.querySelector("#view-" + view + " h1");
      if (heading) heading.focus({ preventScroll: false });
    }
  }

  window.addEventListener("hashchange", function () { route(true); });

  function start() {
    if (!apiBase || !token) { showLogin(""); return; }
    $("login").hidden = true;
    $("app").hidden = false;
    $("foot").hidden = false;
    $("signout").hidden = false;
    $("api-host").textContent = apiBase.replace(/^https?:\/\//, "");
    $("foot-api").textContent = apiBase + "/api/v1";
    route(false);
    var mine = session;
    refresh().then(function (ok) {
      if (mine !== session || !token) return;
      if (ok) loadNames();
      connect();
    });
  }

  $("login-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!apiBase) return;
    var value = $("login-token").value.trim();
    if (!value) return;
    token = value;
    store(TOKEN_KEY, token);
    $("login-token").value = "";
    start();
  });

  $("signout").addEventListener("click", function () { signOut(""); });

  if (linkWarnings.length) {
    var warning = $("link-warning");
    warning.textContent = linkWarnings.join(" ") + " The token goes only to " + apiBase + "/api/v1 and " + monitorBase + ".";
    warning.hidden = false;
  }

  // While the monitor is down the page still follows, more slowly.
  setInterval(function () {
    if (token && connState !== "live") { refresh(); notify({ type: "reload" }); }
  }, POLL_WHEN_NOT_LIVE_MS);
  // Relative times ("2 min ago") move on by themselves.
  setInterval(function () { if (token && events.size) renderEvents(); }, 15000);
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { if (lastData) render(lastData); }, 150);
  });

  // What the other views (contracts.js, contract.js) use. They register themselves before the page
  // starts: deferred scripts all run before DOMContentLoaded.
  window.makima = {
    api: api,
    ApiError: ApiError,
    $: $,
    el: el,
    svg: svg,
    link: link,
    testid: testid,
    humanise: humanise,
    plain: plain,
    shortId: shortId,
    ago: ago,
    when: when,
    clock: clock,
    idle: idle,
    describe: describe,
    category: category,
    actorKind: actorKind,
    contractHref: contractHref,
    fromApi: fromApi,
    names: names,
    STATUSES: STATUSES,
    STATUS_COLORS: STATUS_COLORS,
    WAITING_LABELS: WAITING_LABELS,
    session: function () { return session; },
    live: function () { return connState === "live"; },
    onEvent: function (fn) { listeners.push(fn); },
    register: function (name, view) { views[name] = view; },
    route: route,
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
