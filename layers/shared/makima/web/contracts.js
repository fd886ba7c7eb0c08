/* makima contracts: the contract list (#/contracts), searchable, filterable, paged, live.
 *
 * The filters live in the address (#/contracts?status=paused&q=api&sort=activity&page=2), so a filtered
 * list is a link. GET /api/v1/contracts filters by status, phase, stale and waiting in the database; it has
 * no name search, type filter or sort but newest-first, so the page reads the matching contracts (up to
 * MAX_ROWS, 200 a request) and searches, filters by type, sorts by activity and pages them itself. Any
 * monitor event re-reads the list (debounced) while it is shown.
 */
(function () {
  "use strict";

  var m = window.makima;
  var $ = m.$;
  var el = m.el;

  var PAGE_SIZE = 25;
  var MAX_ROWS = 2000;
  var BATCH = 200;
  var REFRESH_DEBOUNCE_MS = 400;
  var SORTS = ["activity", "activity_asc", "created", "name"];

  var shown = false;
  var rows = []; // what the API returned for the server-side filters
  var fetchedKey = null; // the server-side filters rows belong to
  var truncated = false;
  var loading = null;
  var again = false;
  var timer = null;
  var typesLoaded = false;
  var state = { q: "", status: "", phase: "", type: "", stale: false, waiting: false, sort: "activity", page: 1 };

  function fromQuery(query) {
    var sort = query.get("sort") || "activity";
    return {
      q: query.get("q") || "",
      status: query.get("status") || "",
      phase: query.get("phase") || "",
      type: query.get("type") || "",
      stale: query.get("stale") === "1",
      waiting: query.get("waiting") === "1",
      sort: SORTS.indexOf(sort) >= 0 ? sort : "activity",
      page: Math.max(1, parseInt(query.get("page") || "1", 10) || 1),
    };
  }

  function toQuery(s) {
    var q = new URLSearchParams();
    if (s.q) q.set("q", s.q);
    if (s.status) q.set("status", s.status);
    if (s.phase) q.set("phase", s.phase);
    if (s.type) q.set("type", s.type);
    if (s.stale) q.set("stale", "1");
    if (s.waiting) q.set("waiting", "1");
    if (s.sort !== "activity") q.set("sort", s.sort);
    if (s.page > 1) q.set("page", String(s.page));
    var text = q.toString();
    return "#/contracts" + (text ? "?" + text : "");
  }

  function serverKey(s) {
    return [s.status, s.phase, s.stale ? 1 : 0, s.waiting ? 1 : 0].join("|");
  }

  function serverQuery(s) {
    var q = new URLSearchParams();
    q.set("limit", String(BATCH));
    if (s.status) q.set("status", s.status);
    if (s.phase) q.set("phase", s.phase);
    if (s.stale) q.set("stale", "true");
    if (s.waiting) q.set("waiting", "true");
    return q;
  }

  // --- filters form <-> state -----------------------------------------------------------------------

  function option(value, label) {
    var o = el("option", "", label);
    o.value = value;
    return o;
  }

  function fillSelect(select, values, anyLabel, current) {
    var opts = [option("", anyLabel)].concat(values.map(function (v) { return option(v, m.plain(v)); }));
    if (current && values.indexOf(current) < 0) opts.push(option(current, m.plain(current)));
    select.replaceChildren.apply(select, opts);
    select.value = current || "";
  }

  var phaseIds = ["research", "specify", "plan", "execute", "review"];
  var typeNames = [];

  function loadTypes() {
    if (typesLoaded) return;
    typesLoaded = true;
    var mine = m.session();
    m.api("/contract-types?limit=500").then(function (body) {
      if (mine !== m.session()) return;
      var phases = [];
      typeNames = (body.contract_types || []).map(function (t) {
        (t.phases || []).forEach(function (p) { if (phases.indexOf(p.id) < 0) phases.push(p.id); });
        return t.name;
      });
      phaseIds = phases.length ? phases : phaseIds;
      writeForm();
    }, function () { typesLoaded = false; });
  }

  function writeForm() {
    $("f-q").value = state.q;
    fillSelect($("f-status"), m.STATUSES, "Any status", state.status);
    fillSelect($("f-phase"), phaseIds, "Any phase", state.phase);
    fillSelect($("f-type"), typeNames, "Any type", state.type);
    $("f-sort").value = state.sort;
    $("f-stale").checked = state.stale;
    $("f-waiting").checked = state.waiting;
  }

  function readForm() {
    return {
      q: $("f-q").value.trim(),
      status: $("f-status").value,
      phase: $("f-phase").value,
      type: $("f-type").value,
      stale: $("f-stale").checked,
      waiting: $("f-waiting").checked,
      sort: $("f-sort").value,
      page: 1,
    };
  }

  function changed() {
    state = readForm();
    // The address follows the filters without adding a history entry per keystroke.
    window.history.replaceState(null, "", window.location.pathname + window.location.search + toQuery(state));
    update();
  }

  $("contracts-filters").addEventListener("input", changed);
  $("contracts-filters").addEventListener("submit", function (ev) { ev.preventDefault(); changed(); });

  function goToPage(page) {
    state.page = page;
    window.history.replaceState(null, "", window.location.pathname + window.location.search + toQuery(state));
    render();
    var table = $("contracts-table");
    if (table.scrollIntoView) table.scrollIntoView({ block: "nearest" });
  }

  $("page-prev").addEventListener("click", function () { goToPage(state.page - 1); });
  $("page-next").addEventListener("click", function () { goToPage(state.page + 1); });

  // --- fetching -------------------------------------------------------------------------------------

  function fetchAll(s) {
    var mine = m.session();
    var out = [];
    var base = serverQuery(s);
    function page(cursor) {
      var q = new URLSearchParams(base);
      if (cursor) q.set("cursor", cursor);
      return m.api("/contracts?" + q.toString()).then(function (body) {
        if (mine !== m.session()) return null;
        out = out.concat(body.contracts || []);
        if (body.next_cursor && out.length < MAX_ROWS) return page(body.next_cursor);
        return { rows: out, truncated: !!body.next_cursor };
      });
    }
    return page(null);
  }

  function update() {
    var key = serverKey(state);
    if (key === fetchedKey) { render(); return Promise.resolve(); }
    return reload();
  }

  function reload() {
    if (loading) { again = true; return loading; }
    var s = state;
    var key = serverKey(s);
    $("contracts-table").setAttribute("aria-busy", "true");
    loading = fetchAll(s).then(function (result) {
      if (!result) return;
      rows = result.rows;
      truncated = result.truncated;
      fetchedKey = key;
      rows.forEach(function (c) { m.names.set(String(c.id), c.name); });
      if (shown) render();
    }, function (err) {
      if (!shown) return;
      $("contracts-count").textContent = "Could not load the contracts: " + (err.message || err);
    }).then(function () {
      loading = null;
      $("contracts-table").removeAttribute("aria-busy");
      if (again || (shown && serverKey(state) !== fetchedKey)) { again = false; return reload(); }
    });
    return loading;
  }

  function scheduleReload() {
    if (!shown) { fetchedKey = null; return; }
    clearTimeout(timer);
    timer = setTimeout(reload, REFRESH_DEBOUNCE_MS);
  }

  m.onEvent(function (e) {
    if (e.type === "heartbeat") return;
    scheduleReload();
  });

  // --- rendering ------------------------------------------------------------------------------------

  function time(c, key) {
    var t = Date.parse(c[key]);
    return isNaN(t) ? 0 : t;
  }

  function selected() {
    var q = state.q.toLowerCase();
    var out = rows.filter(function (c) {
      if (state.type && c.contract_type !== state.type) return false;
      if (q && String(c.name).toLowerCase().indexOf(q) < 0 && String(c.id).indexOf(q) !== 0) return false;
      return true;
    });
    var by = {
      activity: function (a, b) { return time(b, "last_activity_at") - time(a, "last_activity_at"); },
      activity_asc: function (a, b) { return time(a, "last_activity_at") - time(b, "last_activity_at"); },
      created: function (a, b) { return time(b, "created_at") - time(a, "created_at"); },
      name: function (a, b) { return String(a.name).localeCompare(String(b.name)); },
    }[state.sort];
    return out.sort(function (a, b) { return by(a, b) || String(a.id).localeCompare(String(b.id)); });
  }

  function statusTag(status) {
    var tag = el("span", "status status-" + status, m.plain(status));
    return tag;
  }

  function render() {
    var ready = fetchedKey === serverKey(state);
    var list = ready ? selected() : [];
    var pages = Math.max(1, Math.ceil(list.length / PAGE_SIZE));
    if (state.page > pages) state.page = pages;
    var start = (state.page - 1) * PAGE_SIZE;
    var pageRows = list.slice(start, start + PAGE_SIZE);
    var body = $("contracts-rows");
    if (!pageRows.length) {
      var tr = el("tr", "empty-row");
      var td = el("td", "empty", !ready ? "Loading…" : "No contract matches these filters.");
      td.colSpan = 5;
      tr.appendChild(td);
      body.replaceChildren(tr);
    } else {
      body.replaceChildren.apply(body, pageRows.map(row));
    }
    var count = list.length + (truncated ? "+" : "") + (list.length === 1 ? " contract" : " contracts");
    $("contracts-count").textContent = ready ? count : "Loading…";
    $("page-info").textContent = "Page " + state.page + " of " + pages;
    $("page-prev").disabled = state.page <= 1;
    $("page-next").disabled = state.page >= pages;
    var th = $("th-activity");
    if (state.sort === "activity") th.setAttribute("aria-sort", "descending");
    else if (state.sort === "activity_asc") th.setAttribute("aria-sort", "ascending");
    else th.removeAttribute("aria-sort");
  }

  function row(c) {
    var tr = el("tr");
    tr.setAttribute("data-contract-id", c.id);
    tr.setAttribute("data-status", c.status);
    var name = el("td", "cell-name");
    var extra = c.status === "waiting_for_input" ? { answer: "1" } : undefined;
    name.appendChild(m.link(m.contractHref(c.id, extra), "row-link", c.name));
    if (c.waiting_for) name.appendChild(el("div", "item-sub", m.plain(String(c.waiting_for).split(":")[0])));
    tr.appendChild(name);
    var st = el("td");
    st.appendChild(statusTag(c.status));
    tr.appendChild(st);
    tr.appendChild(el("td", "", m.plain(c.phase)));
    tr.appendChild(el("td", "hide-narrow", c.contract_type));
    var act = el("td", "cell-time");
    var at = new Date(c.last_activity_at);
    var t = el("time", "", isNaN(at.getTime()) ? "" : m.ago(at));
    if (!isNaN(at.getTime())) {
      t.setAttribute("datetime", at.toISOString());
      t.title = at.toLocaleString();
    }
    act.appendChild(t);
    tr.appendChild(act);
    return tr;
  }

  m.register("contracts", {
    show: function (_, query) {
      shown = true;
      var next = fromQuery(query);
      state = next;
      writeForm();
      loadTypes();
      render();
      reload();
    },
    hide: function () { shown = false; clearTimeout(timer); },
    reset: function () {
      shown = false;
      rows = [];
      fetchedKey = null;
      typesLoaded = false;
      clearTimeout(timer);
    },
  });
})();
