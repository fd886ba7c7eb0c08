/* makima contracts: a contract's page (#/contracts/<id>) and the owner's actions on it.
 *
 * Shows the contract (type, phases, status, version, guard), every phase's deliverables, the tasks, the
 * questions (pending first), the chat, the supervisor with a chart of its recent heartbeats, and the
 * contract's event timeline. While it is shown the one monitor socket is narrowed to this contract with
 * heartbeats included (dashboard.js, focusMonitor): a heartbeat moves the supervisor panel and its chart at
 * once, any other event joins the timeline and re-reads the page (debounced).
 *
 * Every action carries expected_version (the version the page shows): status and phase changes, answers,
 * restarts, auto-complete, deliverables and completion. The API compares it under the contract's row lock
 * in the transaction of the change, so a change made meanwhile comes back 409 VERSION_CONFLICT, nothing
 * written, and is shown as "changed since you loaded it" with the new state, never retried over it. An
 * answer to a question answered meanwhile is the API's own 409 too. Destructive steps ask first, in a
 * modal <dialog>.
 *
 * As everywhere on the page, data reaches the DOM through textContent and attributes only.
 */
(function () {
  "use strict";

  var m = window.makima;
  var $ = m.$;
  var el = m.el;
  var svg = m.svg;

  var RELOAD_DEBOUNCE_MS = 250;
  var MAX_TIMELINE = 100;
  var MAX_HEARTBEATS = 60;
  var EVENT_PAGES = 5;
  var TERMINAL = ["completed", "failed", "archived"];
  var STATE_COLORS = {
    initializing: "#94a3b8", idle: "#64748b", working: "#2563eb", waiting_for_user: "#d97706",
    waiting_for_tasks: "#0d9488", blocked: "#ea580c", completed: "#16a34a", failed: "#dc2626",
    interrupted: "#be123c",
  };

  var shown = false;
  var id = null;
  var data = null; // {contract, byPhase, tasks, questions, messages, supervisor}
  var heartbeats = []; // oldest first
  var timeline = new Map(); // event id -> normalised event
  var rendered = {}; // section -> JSON of what it shows
  var openAnswer = null; // the question id whose answer box is open
  var drafts = new Map(); // question id -> what was typed
  var moveChoice = null; // the phase picked in "Move to another phase", kept across re-renders
  var wantAnswer = null; // from ?answer=: "1" (the first pending question) or a question id
  var loading = null;
  var again = false;
  var timer = null;
  var generation = 0; // bumped when the page shows another contract: late answers are dropped

  // --- loading --------------------------------------------------------------------------------------

  function path(suffix) { return "/contracts/" + encodeURIComponent(id) + (suffix || ""); }

  function optional(promise, fallback) {
    return promise.catch(function (err) {
      if (err instanceof m.ApiError && err.status === 401) throw err;
      return fallback;
    });
  }

  function allPages(url, key, max) {
    var out = [];
    function page(cursor, n) {
      var sep = url.indexOf("?") >= 0 ? "&" : "?";
      return m.api(url + (cursor ? sep + "cursor=" + encodeURIComponent(cursor) : "")).then(function (body) {
        out = out.concat(body[key] || []);
        if (body.next_cursor && n < max) return page(body.next_cursor, n + 1);
        return out;
      });
    }
    return page(null, 1);
  }

  function load() {
    if (!id) return Promise.resolve();
    if (loading) { again = true; return loading; }
    var mine = generation;
    var session = m.session();
    loading = Promise.all([
      m.api(path()),
      optional(m.api(path("/deliverables")), null),
      optional(allPages(path("/tasks?limit=500"), "tasks", 4), []),
      optional(allPages(path("/questions?limit=500"), "questions", 4), []),
      optional(allPages(path("/messages?limit=500"), "messages", 4), []),
      optional(m.api(path("/supervisor/status")), null),
      optional(m.api(path("/supervisor/heartbeats?limit=" + MAX_HEARTBEATS)), { heartbeats: [] }),
      optional(allPages(path("/events?limit=1000"), "events", EVENT_PAGES), []),
    ]).then(function (r) {
      if (mine !== generation || session !== m.session()) return;
      data = { contract: r[0], byPhase: r[1], tasks: r[2], questions: r[3], messages: r[4], supervisor: r[5] };
      m.names.set(String(r[0].id), r[0].name);
      heartbeats = (r[6].heartbeats || []).slice().reverse().map(function (h) {
        return { at: new Date(h.timestamp), state: h.state, progress: h.progress, activity: h.activity };
      });
      r[7].slice(-MAX_TIMELINE).forEach(function (e) { addToTimeline(m.fromApi(e), false); });
      $("contract-error").hidden = true;
      render();
      openRequestedAnswer();
    }, function (err) {
      if (mine !== generation) return;
      var box = $("contract-error");
      if (err instanceof m.ApiError && (err.status === 404 || err.status === 422)) {
        box.textContent = "No contract " + id + " (or it is not yours).";
      } else {
        box.textContent = "Could not load the contract: " + (err.message || err);
      }
      box.hidden = false;
    }).then(function () {
      loading = null;
      if (again && mine === generation) { again = false; return load(); }
    });
    return loading;
  }

  function scheduleLoad() {
    clearTimeout(timer);
    timer = setTimeout(load, RELOAD_DEBOUNCE_MS);
  }

  m.onEvent(function (e) {
    if (!shown || !id) return;
    if (e.type === "reload") { scheduleLoad(); return; }
    if (String(e.contract_id) !== id) return;
    if (e.type === "heartbeat") { onHeartbeat(e); return; }
    if (addToTimeline(e, true)) renderTimeline();
    scheduleLoad();
  });

  function onHeartbeat(e) {
    var d = e.data || {};
    var at = new Date(e.time);
    if (isNaN(at.getTime())) at = new Date();
    heartbeats.push({ at: at, state: d.state, progress: d.progress, activity: d.activity });
    if (heartbeats.length > MAX_HEARTBEATS) heartbeats.splice(0, heartbeats.length - MAX_HEARTBEATS);
    if (data && data.supervisor) {
      data.supervisor = Object.assign({}, data.supervisor, {
        state: d.state, progress: d.progress, current_activity: d.activity, last_heartbeat: at.toISOString(),
        alive: true, dead_since: null,
      });
    } else {
      scheduleLoad();
    }
    renderSupervisor();
  }

  function addToTimeline(e, live) {
    if (!e.id || timeline.has(e.id)) return false;
    e.at = new Date(e.time);
    if (isNaN(e.at.getTime())) e.at = new Date();
    e.fresh = live;
    timeline.set(e.id, e);
    if (timeline.size > MAX_TIMELINE) {
      sortedTimeline().slice(MAX_TIMELINE).forEach(function (old) { timeline.delete(old.id); });
    }
    return true;
  }

  function sortedTimeline() {
    return Array.from(timeline.values()).sort(function (a, b) {
      var na = Number(a.id), nb = Number(b.id);
      if (!isNaN(na) && !isNaN(nb)) return nb - na;
      return b.at.getTime() - a.at.getTime();
    });
  }

  // --- rendering ------------------------------------------------------------------------------------

  function changed(key, value) {
    var json = JSON.stringify(value);
    if (rendered[key] === json) return false;
    rendered[key] = json;
    return true;
  }

  function render() {
    if (!data) return;
    var c = data.contract;
    document.title = c.name + " · makima";
    if (changed("head", [c, data.supervisor ? data.supervisor.task_id : null])) keepingFocus("contract-actions", renderHead);
    if (changed("guard", [c, data.byPhase])) keepingFocus("guard-held", renderGuardHeld);
    if (changed("deliverables", [data.byPhase, c.phase, c.status])) keepingFocus("deliverables", renderDeliverables);
    if (changed("questions", [data.questions, openAnswer])) renderQuestions();
    if (changed("tasks", data.tasks)) renderTasks();
    if (changed("chat", data.messages)) renderChat();
    renderSupervisor();
    renderTimeline();
  }

  // A live re-render must not drop a keyboard user's place: focus returns to the control of the same
  // test id (or id) if it is still there.
  function keepingFocus(hostId, fn) {
    var active = document.activeElement;
    var host = $(hostId);
    var key = active && host.contains(active) ? (active.getAttribute("data-testid") || active.id) : null;
    fn();
    if (!key) return;
    var again = host.querySelector('[data-testid="' + key + '"]') || document.getElementById(key);
    if (again && host.contains(again)) again.focus();
  }

  function fact(dl, label, value, key) {
    var dt = el("dt", "", label);
    var dd = el("dd", "", value);
    if (key) m.testid(dd, "fact-" + key);
    var pair = el("div", "fact");
    pair.appendChild(dt);
    pair.appendChild(dd);
    dl.appendChild(pair);
    return dd;
  }

  // "question:<id>" → "question"; "phase_confirmation:plan" → "phase confirmation → plan".
  function waitingLabel(w) {
    var parts = String(w).split(":");
    if (parts[0] === "phase_confirmation" && parts[1]) return "phase confirmation → " + m.plain(parts[1]);
    return m.plain(parts[0]);
  }

  function isTerminal(c) { return TERMINAL.indexOf(c.status) >= 0; }

  function nextPhase(c) {
    var i = c.phases.indexOf(c.phase);
    return i >= 0 && i + 1 < c.phases.length ? c.phases[i + 1] : null;
  }

  function guardTarget(c) {
    var w = String(c.waiting_for || "");
    if (c.status === "waiting_for_input" && w.indexOf("phase_confirmation:") === 0) return w.slice(19);
    return null;
  }

  function button(label, testId, onClick, className) {
    var b = el("button", className || "btn-secondary", label);
    b.type = "button";
    if (testId) m.testid(b, testId);
    b.addEventListener("click", onClick);
    return b;
  }

  function renderHead() {
    var c = data.contract;
    $("contract-name").textContent = c.name;
    var dl = $("contract-facts");
    dl.replaceChildren();
    fact(dl, "Type", c.contract_type, "type");
    var st = fact(dl, "Status", "", "status");
    st.appendChild(el("span", "status status-" + c.status, m.plain(c.status)));
    if (c.waiting_for) st.appendChild(el("span", "muted", " · " + waitingLabel(c.waiting_for)));
    fact(dl, "Phase", m.plain(c.phase), "phase");
    fact(dl, "Version", c.version, "version");
    fact(dl, "Phase guard", c.phase_guard ? "on: phase changes wait for you" : "off", "guard");
    fact(dl, "Auto-complete", c.auto_complete_enabled ? "on" : "off", "auto-complete");
    var last = new Date(c.last_activity_at);
    fact(dl, "Last activity", isNaN(last.getTime()) ? "—" : m.when(last), "activity");
    if (c.blocked_reason) fact(dl, "Blocked", c.blocked_reason, "blocked");
    if (c.failure_reason) fact(dl, "Failure", c.failure_reason, "failure");

    var phases = $("contract-phases");
    var at = c.phases.indexOf(c.phase);
    phases.replaceChildren.apply(phases, c.phases.map(function (p, i) {
      var li = el("li", i < at ? "done" : i === at ? "current" : "upcoming");
      li.setAttribute("data-phase", p);
      li.appendChild(el("span", "phase-dot", String(i + 1)));
      li.appendChild(el("span", "phase-name", m.plain(p)));
      if (i === at) {
        li.setAttribute("aria-current", "step");
        li.appendChild(el("span", "sr-only", " (current phase)"));
      } else if (i < at) {
        li.appendChild(el("span", "sr-only", " (done)"));
      }
      return li;
    }));

    var actions = $("contract-actions");
    actions.replaceChildren();
    if (isTerminal(c)) { actions.appendChild(el("span", "muted", "This contract is " + c.status + ": no actions.")); return; }
    if (c.status === "paused") {
      actions.appendChild(button("Resume", "action-resume", function () { resume(); }, "btn"));
    } else {
      actions.appendChild(button("Pause…", "action-pause", function () { pause(); }));
    }
    var next = nextPhase(c);
    if (next && !guardTarget(c)) {
      actions.appendChild(button("Advance to " + m.plain(next) + "…", "action-advance", function () { movePhase(next); }));
    }
    var others = c.phases.filter(function (p) { return p !== c.phase && p !== next; });
    if (others.length) {
      // Any other phase: skipping ahead or going back is a person's override (force), which the API
      // asks for with the unmet requirements; the dialog shows them before anything moves.
      var wrap = el("span", "move-other");
      var select = el("select");
      select.id = "move-phase";
      select.setAttribute("aria-label", "Move to another phase");
      others.forEach(function (p) {
        var o = el("option", "", m.plain(p));
        o.value = p;
        select.appendChild(o);
      });
      if (others.indexOf(moveChoice) >= 0) select.value = moveChoice;
      select.addEventListener("change", function () { moveChoice = select.value; });
      wrap.appendChild(select);
      wrap.appendChild(button("Move…", "action-move", function () { movePhase(select.value); }));
      actions.appendChild(wrap);
    }
    if (data.supervisor) {
      actions.appendChild(button("Restart supervisor…", "action-restart", function () { restart(); }));
    }
    var toggle = button("Auto-complete", "action-auto-complete", function () { toggleAutoComplete(); }, "switch");
    toggle.setAttribute("role", "switch");
    toggle.setAttribute("aria-checked", c.auto_complete_enabled ? "true" : "false");
    toggle.prepend(el("span", "switch-track"));
    actions.appendChild(toggle);
  }

  function deliverablesOf(phase) {
    var found = (data.byPhase && data.byPhase.phases || []).filter(function (p) { return p.id === phase; })[0];
    return found ? found.deliverables : (phase === data.contract.phase ? data.contract.deliverables : []);
  }

  function deliverableItems(list) {
    var ul = el("ul", "checklist");
    list.forEach(function (d) {
      var li = el("li", d.completed ? "is-done" : "is-open");
      li.setAttribute("data-deliverable", d.id);
      li.appendChild(el("span", "check", d.completed ? "✓" : "○")).setAttribute("aria-hidden", "true");
      li.appendChild(el("span", "", d.name));
      li.appendChild(el("span", "sr-only", d.completed ? " (done)" : " (not done)"));
      ul.appendChild(li);
    });
    return ul;
  }

  function renderGuardHeld() {
    var c = data.contract;
    var box = $("guard-held");
    var target = guardTarget(c);
    var completion = c.status === "waiting_for_input" && c.waiting_for === "completion_confirmation";
    if (!target && !completion) { box.hidden = true; box.replaceChildren(); return; }
    box.replaceChildren();
    var list = deliverablesOf(c.phase);
    var done = list.filter(function (d) { return d.completed; }).length;
    if (target) {
      box.appendChild(el("h2", "", "The phase guard holds the move to " + m.plain(target))).id = "guard-held-title";
      box.appendChild(el("p", "", "Phase " + m.plain(c.phase) + " is ready (" + done + " of " + list.length +
        " deliverables done). Nothing moves on until you confirm."));
      box.appendChild(deliverableItems(list));
      box.appendChild(button("Confirm move to " + m.plain(target) + "…", "guard-confirm", function () { movePhase(target); }, "btn"));
    } else {
      box.appendChild(el("h2", "", "Waiting for you to confirm completion")).id = "guard-held-title";
      box.appendChild(el("p", "", "The last phase is done (" + done + " of " + list.length + " deliverables)."));
      box.appendChild(deliverableItems(list));
      box.appendChild(button("Complete the contract…", "completion-confirm", function () { complete(); }, "btn"));
    }
    box.hidden = false;
  }

  function renderDeliverables() {
    var c = data.contract;
    var host = $("deliverables");
    var phases = data.byPhase ? data.byPhase.phases : [{ id: c.phase, name: c.phase, deliverables: c.deliverables }];
    var all = 0, done = 0;
    host.replaceChildren.apply(host, phases.map(function (p) {
      var section = el("div", "phase-block" + (p.id === c.phase ? " current" : ""));
      section.setAttribute("data-phase", p.id);
      var n = p.deliverables.filter(function (d) { return d.completed; }).length;
      all += p.deliverables.length;
      done += n;
      var head = el("h3", "", p.name + " ");
      head.appendChild(el("span", "muted", n + "/" + p.deliverables.length + (p.id === c.phase ? " · current" : "")));
      section.appendChild(head);
      if (!p.deliverables.length) { section.appendChild(el("p", "muted small", "No deliverables.")); return section; }
      var ul = el("ul", "checklist");
      p.deliverables.forEach(function (d) {
        var li = el("li", d.completed ? "is-done" : "is-open");
        li.setAttribute("data-deliverable", d.id);
        li.setAttribute("data-completed", d.completed ? "true" : "false");
        li.appendChild(el("span", "check", d.completed ? "✓" : "○")).setAttribute("aria-hidden", "true");
        var label = el("span", "grow", d.name);
        label.appendChild(el("span", "sr-only", d.completed ? " (done)" : " (not done)"));
        li.appendChild(label);
        if (d.completed && d.completed_at) li.appendChild(el("span", "muted small", m.when(new Date(d.completed_at))));
        if (!d.completed && p.id === c.phase && !isTerminal(c)) {
          var b = button("Mark done…", "mark-" + d.id, function () { markDeliverable(p.id, d); }, "btn-small");
          b.setAttribute("aria-label", "Mark " + d.name + " done");
          li.appendChild(b);
        }
        ul.appendChild(li);
      });
      section.appendChild(ul);
      return section;
    }));
    $("d-summary").textContent = done + " of " + all + " done";
  }

  function questionsInOrder() {
    var pending = data.questions.filter(function (q) { return q.status === "pending"; });
    var rest = data.questions.filter(function (q) { return q.status !== "pending"; }).reverse();
    return pending.concat(rest);
  }

  function renderQuestions() {
    var list = $("questions");
    var active = document.activeElement;
    var hadFocus = active && active.id === "answer-input" ? [active.selectionStart, active.selectionEnd] : null;
    var qs = questionsInOrder();
    var pending = qs.filter(function (q) { return q.status === "pending"; }).length;
    $("q-pending").textContent = pending + " pending";
    if (openAnswer && !qs.some(function (q) { return q.id === openAnswer && q.status === "pending"; })) {
      var gone = qs.filter(function (q) { return q.id === openAnswer; })[0];
      if (gone && drafts.get(openAnswer)) {
        conflict("The question was answered meanwhile" + (gone.answered_by ? " (by " + gone.answered_by + ")" : "") +
          ": your draft was not sent.", null);
      }
      openAnswer = null;
    }
    if (!qs.length) { list.replaceChildren(el("li", "empty", "No questions.")); return; }
    list.replaceChildren.apply(list, qs.map(function (q) {
      var li = el("li", "question " + (q.status === "pending" ? "is-pending" : "is-answered"));
      li.setAttribute("data-question-id", q.id);
      li.setAttribute("data-status", q.status);
      var head = el("div", "question-head");
      head.appendChild(el("span", "tag " + (q.status === "pending" ? "tag-amber" : "tag-green"), m.plain(q.status)));
      head.appendChild(el("span", "muted small", m.actorKind(q.asked_by) + " · " + m.when(new Date(q.created_at))));
      li.appendChild(head);
      li.appendChild(el("p", "question-text", q.question));
      if (q.status !== "pending") {
        var ans = el("p", "answer-text");
        ans.appendChild(el("span", "muted", "Answer: "));
        ans.appendChild(el("span", "", q.answer || ""));
        li.appendChild(ans);
        return li;
      }
      if (openAnswer !== q.id) {
        var open = button("Answer", "answer-open", function () { openBox(q.id, true); }, "btn-small");
        open.setAttribute("aria-label", "Answer: " + q.question.slice(0, 80));
        li.appendChild(open);
        return li;
      }
      li.appendChild(answerForm(q));
      return li;
    }));
    if (hadFocus && $("answer-input")) {
      var input = $("answer-input");
      input.focus();
      input.setSelectionRange(hadFocus[0], hadFocus[1]);
    }
  }

  function answerForm(q) {
    var form = el("form", "answer-form");
    m.testid(form, "answer-form");
    var label = el("label", "", "Your answer");
    label.setAttribute("for", "answer-input");
    form.appendChild(label);
    if (q.options && q.options.length) {
      var opts = el("div", "options");
      opts.setAttribute("role", "group");
      opts.setAttribute("aria-label", "Suggested answers");
      q.options.forEach(function (o) {
        opts.appendChild(button(String(o), null, function () {
          var input = $("answer-input");
          input.value = String(o);
          drafts.set(q.id, input.value);
          input.focus();
        }, "btn-small"));
      });
      form.appendChild(opts);
    }
    var input = el("textarea");
    input.id = "answer-input";
    input.rows = 3;
    input.required = true;
    input.value = drafts.get(q.id) || "";
    m.testid(input, "answer-input");
    input.addEventListener("input", function () { drafts.set(q.id, input.value); });
    form.appendChild(input);
    var row = el("div", "form-buttons");
    var cancel = button("Cancel", "answer-cancel", function () { openAnswer = null; drafts.delete(q.id); render(); });
    var send = el("button", "btn", "Send answer");
    send.type = "submit";
    m.testid(send, "answer-send");
    row.appendChild(cancel);
    row.appendChild(send);
    form.appendChild(row);
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var text = input.value.trim();
      if (!text) { input.focus(); return; }
      answer(q, text, send);
    });
    return form;
  }

  function openBox(qid, focusIt) {
    openAnswer = qid;
    render();
    var input = $("answer-input");
    if (focusIt && input) input.focus();
  }

  function openRequestedAnswer() {
    if (!wantAnswer || !data) return;
    var want = wantAnswer;
    wantAnswer = null;
    var pending = questionsInOrder().filter(function (q) { return q.status === "pending"; });
    var q = pending.filter(function (x) { return x.id === want; })[0] || pending[0];
    if (q) { openBox(q.id, true); return; }
    var confirm = document.querySelector("[data-testid=guard-confirm], [data-testid=completion-confirm]");
    if (confirm) confirm.focus();
  }

  function renderTasks() {
    var host = $("tasks");
    var tasks = data.tasks;
    var running = tasks.filter(function (t) { return t.status === "running"; }).length;
    $("t-summary").textContent = tasks.length + " tasks · " + running + " running";
    if (!tasks.length) { host.replaceChildren(el("p", "empty", "No tasks.")); return; }
    var table = el("table", "table");
    var cap = el("caption", "sr-only", "Tasks of this contract");
    table.appendChild(cap);
    var head = el("tr");
    ["Task", "Status", "Daemon", "Updated"].forEach(function (h) {
      var th = el("th", "", h);
      th.setAttribute("scope", "col");
      head.appendChild(th);
    });
    var thead = el("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    var body = el("tbody");
    tasks.forEach(function (t) {
      var tr = el("tr");
      tr.setAttribute("data-task-id", t.id);
      var name = el("td", "", t.name);
      if (t.is_supervisor) name.appendChild(el("span", "tag tag-violet", "supervisor"));
      if (t.error) name.appendChild(el("div", "item-sub", t.error));
      tr.appendChild(name);
      var st = el("td");
      st.appendChild(el("span", "status task-" + t.status, m.plain(t.status)));
      tr.appendChild(st);
      tr.appendChild(el("td", "", t.daemon || (t.daemon_id ? m.shortId(t.daemon_id) : "—")));
      tr.appendChild(el("td", "small", m.when(new Date(t.updated_at))));
      body.appendChild(tr);
    });
    table.appendChild(body);
    host.replaceChildren(table);
  }

  function renderChat() {
    var list = $("chat");
    var msgs = data.messages.slice(-100);
    if (!msgs.length) { list.replaceChildren(el("li", "empty", "No messages.")); return; }
    list.replaceChildren.apply(list, msgs.map(function (msg) {
      var li = el("li", "msg msg-" + msg.role);
      li.setAttribute("data-message-id", String(msg.id));
      var head = el("div", "msg-head");
      head.appendChild(el("span", "msg-role", m.humanise(msg.role)));
      head.appendChild(el("span", "muted small", m.when(new Date(msg.created_at))));
      li.appendChild(head);
      li.appendChild(el("p", "msg-text", msg.content));
      return li;
    }));
    list.scrollTop = list.scrollHeight;
  }

  function renderSupervisor() {
    if (!data) return;
    var s = data.supervisor;
    var host = $("supervisor");
    var live = $("s-liveness");
    if (!s) {
      host.replaceChildren(el("p", "empty", "No supervisor for this contract."));
      live.textContent = "";
      live.className = "tag";
      $("heartbeat-chart").replaceChildren();
      return;
    }
    var liveness = s.stopped ? "stopped" : s.alive ? "alive" : "dead";
    live.textContent = liveness;
    live.className = "tag " + (liveness === "alive" ? "tag-green" : liveness === "dead" ? "tag-red" : "tag-amber");
    live.setAttribute("data-liveness", liveness);
    var dl = el("dl", "facts facts-one");
    fact(dl, "State", m.plain(s.state), "supervisor-state");
    var prog = fact(dl, "Progress", "", "supervisor-progress");
    var bar = el("progress");
    bar.max = 100;
    bar.value = s.progress;
    bar.setAttribute("aria-label", "Supervisor progress");
    prog.appendChild(bar);
    prog.appendChild(el("span", "num", " " + s.progress + "%"));
    fact(dl, "Activity", s.current_activity || "—", "supervisor-activity");
    var beat = s.last_heartbeat ? new Date(s.last_heartbeat) : null;
    var hb = fact(dl, "Last heartbeat", beat ? m.ago(beat) : "never", "supervisor-heartbeat");
    if (beat) hb.title = beat.toLocaleString();
    if (s.dead_since) fact(dl, "Dead since", m.when(new Date(s.dead_since)), "supervisor-dead-since");
    if (s.stopped_since) fact(dl, "Stopped since", m.when(new Date(s.stopped_since)), "supervisor-stopped-since");
    fact(dl, "Generation", s.generation, "supervisor-generation");
    fact(dl, "Daemon", s.daemon_id ? m.shortId(s.daemon_id) : "—", "supervisor-daemon");
    host.replaceChildren(dl);
    renderChart();
  }

  function renderChart() {
    var host = $("heartbeat-chart");
    if (!heartbeats.length) { host.replaceChildren(el("p", "muted small", "No heartbeats in the last 24 hours.")); return; }
    var width = Math.max(260, Math.round(host.clientWidth || 360));
    var height = 150, left = 34, right = 8, top = 10, bottom = 22;
    var plotW = width - left - right, plotH = height - top - bottom;
    var t0 = heartbeats[0].at.getTime();
    var t1 = heartbeats[heartbeats.length - 1].at.getTime();
    var span = Math.max(1, t1 - t0);
    function x(h) { return heartbeats.length === 1 ? left + plotW / 2 : left + ((h.at.getTime() - t0) / span) * plotW; }
    function y(p) { return top + plotH - (Math.max(0, Math.min(100, p)) / 100) * plotH; }
    var first = heartbeats[0], last = heartbeats[heartbeats.length - 1];
    var summary = "Supervisor progress over the last " + heartbeats.length + " heartbeats: from " + first.progress +
      "% (" + m.plain(first.state) + ") to " + last.progress + "% (" + m.plain(last.state) + ")";
    var chart = svg("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": summary });
    chart.appendChild(svg("title", {}, summary));
    [0, 50, 100].forEach(function (p) {
      chart.appendChild(svg("line", { x1: left, x2: width - right, y1: y(p), y2: y(p), class: p ? "grid" : "baseline" }));
      chart.appendChild(svg("text", { x: left - 6, y: y(p), "text-anchor": "end", "dominant-baseline": "central", class: "tick" }, p + "%"));
    });
    chart.appendChild(svg("text", { x: left, y: height - 4, class: "tick" }, m.clock(first.at)));
    chart.appendChild(svg("text", { x: width - right, y: height - 4, "text-anchor": "end", class: "tick" }, m.clock(last.at)));
    if (heartbeats.length > 1) {
      var points = heartbeats.map(function (h) { return x(h).toFixed(1) + "," + y(h.progress).toFixed(1); }).join(" ");
      chart.appendChild(svg("polyline", { points: points, class: "hb-line" }));
    }
    heartbeats.forEach(function (h) {
      var dot = svg("circle", {
        cx: x(h).toFixed(1), cy: y(h.progress).toFixed(1), r: 3.5, fill: STATE_COLORS[h.state] || "#6366f1",
        class: "hb-point", "data-progress": h.progress, "data-state": h.state,
      });
      dot.appendChild(svg("title", {}, m.clock(h.at) + ": " + h.progress + "% · " + m.plain(h.state) + (h.activity ? " · " + h.activity : "")));
      chart.appendChild(dot);
    });
    var legend = el("ul", "legend");
    var states = [];
    heartbeats.forEach(function (h) { if (states.indexOf(h.state) < 0) states.push(h.state); });
    states.forEach(function (st) {
      var li = el("li");
      var sw = el("span", "swatch");
      sw.setAttribute("data-color", st);
      sw.style.background = STATE_COLORS[st] || "#6366f1";
      li.appendChild(sw);
      li.appendChild(el("span", "", m.plain(st)));
      legend.appendChild(li);
    });
    host.replaceChildren(chart, legend);
  }

  function renderTimeline() {
    var list = $("timeline");
    var rows = sortedTimeline();
    if (!rows.length) { list.replaceChildren(el("li", "empty", "No events yet.")); return; }
    list.replaceChildren.apply(list, rows.map(function (e) {
      var li = el("li", "event cat-" + m.category(e.type) + (e.fresh ? " fresh" : ""));
      e.fresh = false;
      li.setAttribute("data-event-id", e.id);
      li.setAttribute("data-type", e.type);
      li.appendChild(el("span", "event-dot"));
      var body = el("div", "event-body");
      var head = el("div", "event-head");
      head.appendChild(el("span", "event-type", m.humanise(e.type)));
      var detail = m.describe(e);
      if (detail) head.appendChild(el("span", "event-detail", detail));
      body.appendChild(head);
      var who = m.actorKind(e.actor);
      if (who) body.appendChild(el("div", "event-meta", who));
      li.appendChild(body);
      var t = el("time", "event-time", m.ago(e.at));
      t.setAttribute("datetime", e.at.toISOString());
      t.title = e.at.toLocaleString();
      li.appendChild(t);
      return li;
    }));
  }

  // --- the confirmation dialog ------------------------------------------------------------------------

  var dialogResolve = null;

  function ask(opts) {
    var dialog = $("dialog");
    $("dialog-title").textContent = opts.title;
    $("dialog-text").textContent = opts.text || "";
    var items = $("dialog-items");
    if (opts.items && opts.items.length) {
      items.replaceChildren.apply(items, opts.items.map(function (it) {
        var li = el("li", it.done === undefined ? "" : it.done ? "is-done" : "is-open");
        if (it.done !== undefined) li.appendChild(el("span", "check", it.done ? "✓ " : "○ ")).setAttribute("aria-hidden", "true");
        li.appendChild(el("span", "", it.text));
        if (it.done !== undefined) li.appendChild(el("span", "sr-only", it.done ? " (done)" : " (not done)"));
        return li;
      }));
      items.hidden = false;
    } else {
      items.replaceChildren();
      items.hidden = true;
    }
    $("dialog-reason-field").hidden = !opts.reason;
    $("dialog-reason-label").textContent = opts.reason || "Reason";
    $("dialog-reason").value = "";
    var ok = $("dialog-ok");
    ok.textContent = opts.confirm || "Confirm";
    ok.className = opts.danger ? "btn btn-danger" : "btn";
    dialog.returnValue = "";
    var opener = document.activeElement;
    return new Promise(function (resolve) {
      dialogResolve = function (value) {
        dialogResolve = null;
        if (opener && opener.isConnected && opener.focus) opener.focus();
        resolve(value);
      };
      dialog.showModal();
      (opts.reason ? $("dialog-reason") : ok).focus();
    });
  }

  $("dialog").addEventListener("close", function () {
    var dialog = $("dialog");
    if (!dialogResolve) return;
    dialogResolve(dialog.returnValue === "ok" ? { ok: true, reason: $("dialog-reason").value.trim() } : { ok: false });
  });

  // --- actions ------------------------------------------------------------------------------------------

  function said(text) {
    var box = $("action-result");
    box.textContent = text;
    box.hidden = false;
  }

  function conflict(text, contract) {
    var box = $("contract-conflict");
    var now = contract ? " Now: version " + contract.version + ", status " + m.plain(contract.status) + ", phase " +
      m.plain(contract.phase) + "." : "";
    box.textContent = "Changed since you loaded it: " + text + now + " Nothing was overwritten; the page shows the new state.";
    box.hidden = false;
    box.focus();
    scheduleLoad();
  }

  function failed(err) {
    if (err instanceof m.ApiError && err.code === "VERSION_CONFLICT") {
      var d = err.details || {};
      conflict("you saw version " + d.expected + ".", d.actual ? {
        version: d.actual, status: d.current_status, phase: d.current_phase,
      } : null);
      return;
    }
    if (err instanceof m.ApiError && err.status === 409) { conflict(err.message + ".", null); return; }
    var box = $("contract-error");
    box.textContent = err instanceof m.ApiError ? err.code + ": " + err.message : "Could not reach the API: " + err;
    box.hidden = false;
  }

  function clearNotices() {
    $("contract-conflict").hidden = true;
    $("contract-error").hidden = true;
    $("action-result").hidden = true;
  }

  function run(call, message) {
    var mine = generation;
    clearNotices();
    return call().then(function (result) {
      if (mine !== generation) return result;
      said(message);
      return load().then(function () { return result; });
    }).catch(function (err) {
      if (mine === generation) failed(err);
      return null;
    });
  }

  function pause() {
    var c = data.contract;
    ask({ title: "Pause " + c.name + "?", text: "The supervisor stops taking work until you resume it.",
      reason: "Reason (optional)", confirm: "Pause", danger: true }).then(function (a) {
      if (!a.ok) return;
      var body = { status: "paused", expected_version: c.version };
      if (a.reason) body.reason = a.reason;
      run(function () { return m.api(path("/status"), "POST", body); }, "Paused.");
    });
  }

  function resume() {
    var c = data.contract;
    run(function () { return m.api(path("/status"), "POST", { status: "active", expected_version: c.version }); }, "Resumed.");
  }

  // Without the guard the page asks first; with it, the API's 409 PHASE_GUARD_REQUIRED carries the phase's
  // deliverables, which the dialog shows before the confirmed move. Unmet requirements (400) can be
  // overridden by a person: the dialog lists them and "Move anyway" sends force.
  function movePhase(target) {
    var c = data.contract;
    var mine = generation;
    clearNotices();
    var version = c.version;
    function send(confirmed, force) {
      var body = { phase: target, expected_version: version, confirmed: confirmed };
      if (force) body.force = true;
      return m.api(path("/phase"), "POST", body).then(function () {
        if (mine !== generation) return;
        said("Moved to " + m.plain(target) + ".");
        return load();
      }, function (err) {
        if (mine !== generation) return;
        var d = (err && err.details) || {};
        if (err instanceof m.ApiError && err.code === "PHASE_GUARD_REQUIRED") {
          var list = d.deliverables || [];
          return ask({
            title: "Confirm the move to " + m.plain(target),
            text: "The phase guard holds " + m.plain(d.current_phase || c.phase) + " → " + m.plain(target) + ". " +
              (d.completed_count !== undefined ? d.completed_count + " of " + d.total_count + " deliverables of " +
              m.plain(d.current_phase || c.phase) + " are done." : ""),
            items: list.map(function (x) { return { text: x.name, done: !!x.completed }; }),
            confirm: "Confirm move",
          }).then(function (a) { if (a.ok) return send(true, force); });
        }
        if (err instanceof m.ApiError && err.code === "VALIDATION_FAILED" && d.missing_requirements && d.force_allowed) {
          return ask({
            title: "Requirements of " + m.plain(d.current_phase || c.phase) + " are not met",
            text: "Moving to " + m.plain(target) + " anyway skips these (recorded in the event):",
            items: d.missing_requirements.map(function (x) { return { text: x }; }),
            confirm: "Move anyway", danger: true,
          }).then(function (a) { if (a.ok) return send(confirmed, true); });
        }
        failed(err);
      });
    }
    if (c.phase_guard) return send(false, false);
    var list = deliverablesOf(c.phase);
    return ask({
      title: "Move to " + m.plain(target) + "?",
      text: "Phase " + m.plain(c.phase) + ": " + list.filter(function (d) { return d.completed; }).length + " of " +
        list.length + " deliverables done.",
      items: list.map(function (x) { return { text: x.name, done: !!x.completed }; }),
      confirm: "Move",
    }).then(function (a) { if (a.ok) return send(false, false); });
  }

  function complete() {
    var c = data.contract;
    ask({ title: "Complete " + c.name + "?", text: "The contract is marked completed; its supervisor stops.",
      confirm: "Complete", danger: true }).then(function (a) {
      if (!a.ok) return;
      var body = { confirmed: true, expected_version: c.version };
      run(function () { return m.api(path("/check-completion"), "POST", body); }, "Completed.");
    });
  }

  function restart() {
    var c = data.contract;
    ask({ title: "Restart the supervisor of " + c.name + "?",
      text: "Its current run is abandoned; a daemon restores it from its last saved state as a new generation.",
      reason: "Reason (optional)", confirm: "Restart", danger: true }).then(function (a) {
      if (!a.ok) return;
      var body = { expected_version: c.version };
      if (a.reason) body.reason = a.reason;
      run(function () { return m.api(path("/supervisor/restart"), "POST", body); }, "Restart asked for.");
    });
  }

  function toggleAutoComplete() {
    var c = data.contract;
    var on = !c.auto_complete_enabled;
    ask({ title: (on ? "Turn on" : "Turn off") + " auto-complete?",
      text: on ? "The contract completes by itself once its last phase's gate is met."
        : "The contract will wait for you to confirm its completion.",
      confirm: on ? "Turn on" : "Turn off" }).then(function (a) {
      if (!a.ok) return;
      run(function () { return m.api(path("/auto-complete"), "PUT", { enabled: on, expected_version: c.version }); },
        "Auto-complete " + (on ? "on" : "off") + ".");
    });
  }

  function markDeliverable(phase, d) {
    var version = data.contract.version;
    ask({ title: "Mark " + d.name + " done?", text: "Recorded as done by you in phase " + m.plain(phase) +
      "; it cannot be undone from here.", confirm: "Mark done" }).then(function (a) {
      if (!a.ok) return;
      var body = { deliverable_id: d.id, phase: phase, expected_version: version };
      run(function () { return m.api(path("/deliverables"), "POST", body); }, d.name + " marked done.");
    });
  }

  function answer(q, text, sendButton) {
    sendButton.disabled = true;
    var mine = generation;
    clearNotices();
    var body = { answer: text, expected_version: data.contract.version };
    m.api(path("/questions/" + encodeURIComponent(q.id) + "/answer"), "POST", body).then(function () {
      if (mine !== generation) return;
      drafts.delete(q.id);
      openAnswer = null;
      said("Answer sent.");
      return load();
    }, function (err) {
      if (mine !== generation) return;
      sendButton.disabled = false;
      if (err instanceof m.ApiError && err.code === "VERSION_CONFLICT") {
        failed(err); // the contract moved: the draft stays, to be sent again on the new state
        return;
      }
      if (err instanceof m.ApiError && err.status === 409) {
        drafts.delete(q.id);
        openAnswer = null;
        conflict("the question was already answered (" + err.message + "): your answer was not sent.", null);
        return;
      }
      failed(err);
    });
  }

  $("chat-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var input = $("chat-input");
    var text = input.value.trim();
    if (!text || !id) return;
    run(function () { return m.api(path("/messages"), "POST", { content: text }); }, "Message sent.").then(function (r) {
      if (r) input.value = "";
    });
  });

  // --- the view -------------------------------------------------------------------------------------

  function clear() {
    generation += 1;
    data = null;
    heartbeats = [];
    timeline.clear();
    rendered = {};
    openAnswer = null;
    moveChoice = null;
    drafts.clear();
    clearTimeout(timer);
    ["contract-facts", "contract-phases", "contract-actions", "questions", "deliverables", "tasks", "chat",
      "supervisor", "heartbeat-chart", "timeline"].forEach(function (k) { $(k).replaceChildren(); });
    $("contract-name").textContent = "Loading…";
    $("guard-held").hidden = true;
    clearNotices();
  }

  var result = el("p", "notice", "");
  result.id = "action-result";
  m.testid(result, "action-result");
  result.setAttribute("role", "status");
  result.hidden = true;
  $("view-contract").insertBefore(result, $("contract-conflict"));

  setInterval(function () { if (shown && data) { renderTimeline(); renderSupervisor(); } }, 15000);

  m.register("contract", {
    show: function (contractId, query) {
      if (contractId !== id) { clear(); id = contractId; }
      shown = true;
      wantAnswer = query.get("answer");
      load();
    },
    hide: function () {
      shown = false;
      id = null;
      clear();
      document.title = "makima · contracts";
      if ($("dialog").open) $("dialog").close("cancel");
    },
    reset: function () { shown = false; id = null; clear(); },
  });
})();
