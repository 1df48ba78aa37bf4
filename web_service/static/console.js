// Agent console: sign-in, views (queue, mine, callbacks, closed, search results, supervisor), push updates,
// notifications and keyboard shortcuts. No timers call the server: everything after the first load is read
// again only when the push stream says it changed.
(function (C) {
  "use strict";
  const { $, el, api, label } = C;
  const TITLES = { queue: "Queue", mine: "Mine", callbacks: "Callbacks", closed: "Closed", search: "Search results" };
  let searchQuery = "", queueTimer = null, known = new Set();

  // --- sign-in -------------------------------------------------------------------------------------------
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("login-error").textContent = "";
    try {
      const resp = await fetch("/api/auth/token", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username: $("username").value, password: $("password").value }) });
      const data = await resp.json();
      if (!resp.ok) throw new Error(data.detail || "Sign-in failed");
      C.saveAuth({ token: data.access_token, role: data.role });
      start();
    } catch (err) { $("login-error").textContent = err.message; }
  });

  C.onSignOut = function () {
    C.saveAuth(null); C.stopStream(); C.me = null; C.selected = null; C.detail = null;
    ["app", "nav", "logout", "search-form", "alerts", "help-open"].forEach((id) => { $(id).hidden = true; });
    $("login").hidden = false; $("who").textContent = "";
    history.replaceState(null, "", location.pathname);
    $("username").focus();
  };
  $("logout").addEventListener("click", () => C.onSignOut());

  async function start() {
    C.me = await api("GET", "/api/console/me");
    $("login").hidden = true;
    ["app", "nav", "logout", "search-form", "alerts", "help-open"].forEach((id) => { $(id).hidden = false; });
    const skills = [].concat(me().skills.categories.map(label), me().skills.languages).join(", ") || "all skills";
    $("who").textContent = me().full_name + " (" + me().role + "; " + skills + ")";
    $("who").title = $("who").textContent;
    $("tab-supervisor").hidden = !(me().role === "supervisor" || me().role === "admin");
    C.readUrl();
    if (C.view === "supervisor" && $("tab-supervisor").hidden) C.view = "queue";
    showView(C.view, true);
    C.loadCanned();
    const reopen = C.selected;
    if (reopen && C.view !== "supervisor") C.select(reopen);
    C.stream(onEvent);
  }
  const me = () => C.me;

  // --- views ---------------------------------------------------------------------------------------------
  function showView(view, keepSelection) {
    C.view = view;
    document.querySelectorAll(".tab").forEach((t) => {
      const on = t.dataset.view === view;
      t.classList.toggle("active", on);
      if (on) t.setAttribute("aria-current", "page"); else t.removeAttribute("aria-current");
    });
    const sup = view === "supervisor";
    $("supervisor").hidden = !sup;
    document.querySelector(".queue-pane").hidden = sup;
    if (!keepSelection && !sup) { /* the open conversation stays open across list views */ }
    $("conversation").hidden = sup || !C.selected; $("customer").hidden = sup || !C.selected;
    $("app").classList.toggle("sup", sup);
    C.pushUrl();
    if (sup) C.refreshSupervisor(); else C.refreshQueue();
  }
  document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => { searchQuery = ""; $("search").value = ""; showView(tab.dataset.view); }));

  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    searchQuery = $("search").value.trim();
    if (C.view === "supervisor") showView("queue"); else C.refreshQueue();
  });
  $("search").addEventListener("search", () => { if (!$("search").value) { searchQuery = ""; C.refreshQueue(); } });

  // --- the list ------------------------------------------------------------------------------------------
  C.refreshQueue = async function () {
    if (!C.auth || C.view === "supervisor") return;
    let items;
    try {
      items = searchQuery ? await api("POST", "/api/console/search", { q: searchQuery })
        : await api("GET", "/api/handoffs?view=" + C.view);
    } catch (err) { $("conv-error").textContent = err.message; return; }
    C.items = items;
    const received = Date.now();
    $("queue-name").textContent = searchQuery ? TITLES.search + " for “" + searchQuery + "”" : TITLES[C.view];
    $("queue-count").textContent = "(" + items.length + ")";
    $("queue-empty").hidden = items.length > 0;
    $("queue").querySelector("tbody").replaceChildren(...items.map((h) => row(h, received)));
    tickWaiting();
  };

  function row(h, received) {
    const open = h.status === "queued" || h.status === "callback";
    const name = h.customer ? h.customer.full_name : "Visitor";
    const tr = el("tr", { "data-id": h.id, "data-conversation": h.conversation_id, tabindex: "0",
      "aria-selected": h.id === C.selected ? "true" : "false",
      class: [h.sla_breached ? "breached" : "", h.id === C.selected ? "selected" : ""].join(" "),
      onclick: () => C.select(h.id), onkeydown: (e) => { if (e.key === "Enter" && e.target === tr) C.select(h.id); } },
      el("td", {}, el("span", { class: "prio " + h.priority }, h.priority)),
      el("td", { class: "who-cell" }, el("div", { class: "name" }, name, h.customer ? el("span", { class: "tier" }, " " + h.customer.loyalty_tier) : null),
        el("div", { class: "muted" }, h.reason_label + " · " + ([label(h.category) || "any", h.language].join(" · ")) + (h.ticket ? " · " + h.ticket : "")),
        h.assignee ? el("div", { class: "muted" }, "with " + h.assignee) : null),
      el("td", { class: "due" }, el("span", { class: "waiting", "data-since": h.waiting_seconds, "data-at": received,
        "data-running": !h.first_response_at && !h.closed_at ? "1" : "0" }, C.minutes(h.waiting_seconds)),
        el("div", { class: "muted" }, open || h.status === "assigned" ? "due " + C.time(h.first_response_due_at) : label(h.status)),
        h.sla_breached ? el("div", { class: "sla" }, "SLA breached") : null),
      el("td", { class: "act" }, open ? el("button", { type: "button", class: "claim small", "aria-label": "Claim conversation with " + name,
        onclick: (e) => { e.stopPropagation(); C.claim(h.id); } }, "Claim") : null));
    return tr;
  }
  // Waiting times count up in the page itself (no request): from the value the server gave and its time.
  function tickWaiting() {
    clearTimeout(queueTimer);
    document.querySelectorAll("#queue .waiting[data-running='1']").forEach((w) => {
      w.textContent = C.minutes(Number(w.dataset.since) + Math.floor((Date.now() - Number(w.dataset.at)) / 1000));
    });
    queueTimer = setTimeout(tickWaiting, 15000);
  }

  // --- push ----------------------------------------------------------------------------------------------
  let pending = null;
  function refreshListSoon() { clearTimeout(pending); pending = setTimeout(() => C.refreshQueue(), 80); }
  function onEvent(ev) {
    const open = C.detail;
    if (ev.type === "hello") { C.refreshQueue(); if (C.selected) C.refreshConversation(); return; }
    if (ev.type === "handoff") {
      refreshListSoon();
      if (ev.id === C.selected) C.refreshConversation();
      if (ev.change === "new" && !known.has(ev.id)) { known.add(ev.id); C.notify("New conversation in the queue"); }
    } else if (ev.type === "message") {
      if (ev.handoff_id === C.selected) C.refreshConversation();
    } else if (ev.type === "signal" && ev.party === "customer" && open && ev.conversation_id === open.conversation_id) {
      if (ev.kind === "typing") C.customerTyping(); else C.customerSent();
    } else if (ev.type === "attachment" && open && ev.conversation_id === open.conversation_id) {
      C.loadPhotos();
    }
  }

  // --- alerts --------------------------------------------------------------------------------------------
  function showPrefs() {
    $("sound-toggle").setAttribute("aria-pressed", String(C.prefs.sound));
    $("sound-toggle").title = C.prefs.sound ? "Sound for new conversations is on" : "Sound for new conversations is off";
    $("desktop-toggle").setAttribute("aria-pressed", String(C.prefs.desktop));
    $("desktop-toggle").title = C.prefs.desktop ? "Desktop notifications are on" : "Desktop notifications are off";
  }
  $("sound-toggle").addEventListener("click", () => { C.prefs.sound = !C.prefs.sound; C.savePrefs(); showPrefs(); });
  $("desktop-toggle").addEventListener("click", async () => {
    if (!C.prefs.desktop && "Notification" in window && Notification.permission !== "granted") {
      const answer = await Notification.requestPermission().catch(() => "denied");
      if (answer !== "granted") { $("desktop-toggle").title = "The browser did not allow notifications"; return; }
    }
    C.prefs.desktop = !C.prefs.desktop; C.savePrefs(); showPrefs();
  });
  showPrefs();

  // --- keyboard shortcuts --------------------------------------------------------------------------------
  let prefixG = false;
  function move(step) {
    const rows = Array.from(document.querySelectorAll("#queue tbody tr"));
    if (!rows.length) return;
    const at = rows.findIndex((r) => Number(r.dataset.id) === C.selected);
    const next = rows[Math.max(0, Math.min(rows.length - 1, at < 0 ? 0 : at + step))];
    next.focus();
    C.select(Number(next.dataset.id));
  }
  document.addEventListener("keydown", (e) => {
    if (!C.me || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target, typing = t.matches("input, textarea, select, [contenteditable]");
    if (e.key === "Escape" && typing) { t.blur(); return; }
    if (typing || $("help").open) return;
    if (prefixG) {
      prefixG = false;
      const v = { q: "queue", m: "mine", l: "callbacks", d: "closed" }[e.key];
      if (v) { e.preventDefault(); searchQuery = ""; showView(v); }
      return;
    }
    const act = {
      j: () => move(1), k: () => move(-1), c: () => C.claim(), r: () => $("reply").focus(), n: () => $("note").focus(),
      e: () => C.close("resolve"), b: () => C.close("handback"), "/": () => $("search").focus(), "?": () => $("help").showModal(),
      g: () => { prefixG = true; },
    }[e.key];
    if (act) { e.preventDefault(); act(); }
  });
  $("help-open").addEventListener("click", () => $("help").showModal());

  if (C.auth) start().catch(() => C.onSignOut());
  else $("username").focus();
})(window.C);
