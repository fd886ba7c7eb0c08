/* makima contracts: the contract list (#/contracts), searchable, filterable, paged, live.
 *
 * The filters live in the address (#/contracts?status=paused&q=api&sort=created&page=2), so a filtered
 * list is a link. GET /api/v1/contracts does the work: it filters (status, phase, stale, waiting, type),
 * searches names (q) and sorts (activity or created) in the database, and hands out a page of PAGE_SIZE
 * with a cursor to the next. The page keeps the cursors of the pages it went through, so "Previous page"
 * goes back without a request it cannot make (a cursor only goes forward); a link to page N walks the N-1
 * pages before it. Any monitor event re-reads the page shown (debounced) while the list is shown.
 */
(function () {
  "use strict";

  var m = window.makima;
  var $ = m.$;
  var el = m.el;

  var PAGE_SIZE = 25;
  var MAX_PAGE = 200; // a link to a deeper page opens the first (the walk to it would be 200 requests)
  var REFRESH_DEBOUNCE_MS = 400;
  var TYPING_DEBOUNCE_MS = 250;
  var SORTS = ["activity", "created"];

  var shown = false;
  var rows = []; // the page shown
  var more = false; // the API has a next page
  var cursors = [null]; // cursors[i]: the cursor of page i + 1 (null: the first), for the filters of cursorsKey
  var cursorsKey = null;
  var fetchedKey = null; // the filters and page that rows are
  var loading = null;
  var again = false;
  var timer = null;
  var typing = null;
  var typesLoaded = false;
  var state = { q: "", status: "", phase: "", type: "", stale: false, waiting: false, sort: "activity", page: 1 };

  function fromQuery(query) {
    var sort = query.get("sort") || "activity";
    var page = Math.max(1, parseInt(query.get("page") || "1", 10) || 1);
    return {
      q: (query.get("q") || "").slice(0, 100),
      status: query.get("status") || "",
      phase: query.get("phase") || "",
      type: query.get("type") || "",
      stale: query.get("stale") === "1",
      waiting: query.get("waiting") === "1",
      sort: SORTS.indexOf(sort) >= 0 ? sort : "activity",
      page: page > MAX_PAGE ? 1 : page,
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

  // The filters a list of pages (and its cursors) belongs to: any change of them starts at page 1.
  function filtersKey(s) {
    return [s.q, s.status, s.phase, s.type, s.stale ? 1 : 0, s.waiting ? 1 : 0, s.sort].join("|");
  }

  function pageKey(s) {
    return filtersKey(s) + "|" + s.page;
  }

  function serverQuery(s, cursor) {
    var q = new URLSearchParams();
    q.set("limit", String(PAGE_SIZE));
    q.set("sort", s.sort);
    if (s.q) q.set("q", s.q);
    if (s.status) q.set("status", s.status);
    if (s.phase) q.set("phase", s.phase);
    if (s.type) q.set("contract_type", s.type);
    if (s.stale) q.set("stale", "true");
    if (s.waiting) q.set("waiting", "true");
    if (cursor) q.set("cursor", cursor);
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

  function writeAddress() {
    // The address follows the filters without adding a history entry per keystroke.
    window.history.replaceState(null, "", window.location.pathname + window.location.search + toQuery(state));
  }

  function changed() {
    clearTimeout(typing);
    typing = null;
    state = readForm();
    writeAddress();
    update();
  }

  // A search asks the API: wait for a pause in the typing rather than ask at every key.
  $("contracts-filters").addEventListener("input", function (ev) {
    clearTimeout(typing);
    if (ev.target && ev.target.id === "f-q") typing = setTimeout(changed, TYPING_DEBOUNCE_MS);
    else changed();
  });
  $("contracts-filters").addEventListener("submit", function (ev) { ev.preventDefault(); changed(); });

  function goToPage(page) {
    state.page = page;
    writeAddress();
    update().then(function () {
      var table = $("contracts-table");
      if (table.scrollIntoView) table.scrollIntoView({ block: "nearest" });
    });
  }

  $("page-prev").addEventListener("click", function () { goToPage(state.page - 1); });
  $("page-next").addEventListener("click", function () { goToPage(state.page + 1); });

  // --- fetching -------------------------------------------------------------------------------------

  // The page s.page of s's filters: from the cursor of the page before when it is known, else by walking
  // from the first page (a link to page N). Resolves to null when the session changed meanwhile.
  function fetchPage(s) {
    var mine = m.session();
    var key = filtersKey(s);
    if (cursorsKey !== key) { cursors = [null]; cursorsKey = key; }
    var known = cursors.slice();
    function step(index) {
      return m.api("/contracts?" + serverQuery(s, known[index]).toString()).then(function (body) {
        if (mine !== m.session()) return null;
        var next = body.next_cursor || null;
        if (cursorsKey === key) cursors[index + 1] = next;
        known[index + 1] = next;
        if (index + 1 < s.page && next) return step(index + 1);
        return { rows: body.contracts || [], more: !!next, page: index + 1 };
      });
    }
    var start = Math.min(s.page - 1, known.length - 1);
    while (start > 0 && !known[start]) start -= 1;
    return step(start);
  }

  function update() {
    if (pageKey(state) === fetchedKey) { render(); return Promise.resolve(); }
    return reload();
  }

  function reload() {
    if (loading) { again = true; return loading; }
    var s = state;
    $("contracts-table").setAttribute("aria-busy", "true");
    loading = fetchPage(s).then(function (result) {
      if (!result) return;
      if (s !== state && filtersKey(s) !== filtersKey(state)) return; // the filters changed meanwhile
      rows = result.rows;
      more = result.more;
      if (result.page !== s.page) { // the list is shorter than the link's page: its last page
        s.page = result.page;
        if (s === state) writeAddress();
      }
      fetchedKey = pageKey(s);
      rows.forEach(function (c) { m.names.set(String(c.id), c.name); });
      if (shown) render();
    }, function (err) {
      if (!shown) return;
      $("contracts-count").textContent = "Could not load the contracts: " + (err.message || err);
    }).then(function () {
      loading = null;
      $("contracts-table").removeAttribute("aria-busy");
      if (again || (shown && pageKey(state) !== fetchedKey)) { again = false; return reload(); }
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

  function statusTag(status) {
    var tag = el("span", "status status-" + status, m.plain(status));
    return tag;
  }

  function render() {
    var ready = fetchedKey === pageKey(state);
    var body = $("contracts-rows");
    if (!ready || !rows.length) {
      var tr = el("tr", "empty-row");
      var td = el("td", "empty", !ready ? "Loading…" : "No contract matches these filters.");
      td.colSpan = 5;
      tr.appendChild(td);
      body.replaceChildren(tr);
    } else {
      body.replaceChildren.apply(body, rows.map(row));
    }
    // No total comes with a page (counting every match would cost what the page saves): the count is
    // exact on the last page, and says there are more before it.
    var first = (state.page - 1) * PAGE_SIZE;
    var count;
    if (!ready) count = "Loading…";
    else if (state.page === 1 && !more) count = rows.length + (rows.length === 1 ? " contract" : " contracts");
    else if (more) count = "Contracts " + (first + 1) + "–" + (first + rows.length) + ", more on the next page";
    else count = "Contracts " + (first + 1) + "–" + (first + rows.length) + " of " + (first + rows.length);
    $("contracts-count").textContent = count;
    $("page-info").textContent = "Page " + state.page + (ready && !more ? " of " + state.page : "");
    $("page-prev").disabled = state.page <= 1;
    $("page-next").disabled = !ready || !more;
    var th = $("th-activity");
    if (state.sort === "activity") th.setAttribute("aria-sort", "descending");
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
    hide: function () { shown = false; clearTimeout(timer); clearTimeout(typing); },
    reset: function () {
      shown = false;
      rows = [];
      more = false;
      cursors = [null];
      cursorsKey = null;
      fetchedKey = null;
      typesLoaded = false;
      clearTimeout(timer);
    },
  });
})();
