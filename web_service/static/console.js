// Agent console: plain DOM and fetch against the authenticated API; charts are hand-drawn SVG (no CDN).
// The token lives in sessionStorage: it ends with the browser tab, and every call sends it as a bearer.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const KEY = "appliance-care-console";
  let auth = JSON.parse(sessionStorage.getItem(KEY) || "null");
  let view = "queue", selected = null, detail = null, me = null, timers = [];

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined) node.setAttribute(k, v);
    });
    children.flat().forEach((c) => { if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c)); });
    return node;
  }

  async function api(method, path, body) {
    const resp = await fetch(path, {
      method, headers: Object.assign({ "Content-Type": "application/json" }, auth ? { Authorization: "Bearer " + auth.token } : {}),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (resp.status === 401) { signOut(); throw new Error("Your session has ended; please sign in again."); }
    const data = await resp.json().catch(() => null);
    if (!resp.ok) throw new Error((data && (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail))) || resp.statusText);
    return data;
  }

  function minutes(seconds) { return seconds < 60 ? seconds + " s" : Math.floor(seconds / 60) + " min"; }
  function time(iso) { return iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : ""; }
  function label(s) { return String(s || "").replace(/_/g, " "); }

  // --- sign-in ---------------------------------------------------------------------------------------
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("login-error").textContent = "";
    try {
      const resp = await fetch("/api/auth/token", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username: $("username").value, password: $("password").value }) });
      const data = await resp.json();
      if (!resp.ok) throw new Error(data.detail || "Sign-in failed");
      auth = { token: data.access_token, role: data.role };
      sessionStorage.setItem(KEY, JSON.stringify(auth));
      start();
    } catch (err) { $("login-error").textContent = err.message; }
  });

  function signOut() {
    auth = null; sessionStorage.removeItem(KEY); timers.forEach(clearInterval); timers = [];
    $("app").hidden = true; $("nav").hidden = true; $("logout").hidden = true; $("login").hidden = false; $("who").textContent = "";
  }
  $("logout").addEventListener("click", signOut);

  async function start() {
    me = await api("GET", "/api/console/me");
    $("login").hidden = true; $("app").hidden = false; $("nav").hidden = false; $("logout").hidden = false;
    const skills = [].concat(me.skills.categories.map(label), me.skills.languages).join(", ") || "all skills";
    $("who").textContent = me.full_name + " (" + me.role + "; " + skills + ")";
    $("tab-supervisor").hidden = !(me.role === "supervisor" || me.role === "admin");
    timers.forEach(clearInterval);
    timers = [setInterval(refreshQueue, 3000), setInterval(refreshConversation, 1500)];
    refreshQueue();
  }

  document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
    view = tab.dataset.view;
    const sup = view === "supervisor";
    $("supervisor").hidden = !sup;
    document.querySelector(".queue-pane").hidden = sup;
    $("conversation").hidden = sup || !selected; $("customer").hidden = sup || !selected;
    if (sup) refreshSupervisor(); else refreshQueue();
  }));

  // --- queue -----------------------------------------------------------------------------------------
  async function refreshQueue() {
    if (!auth || view === "supervisor") return;
    let items;
    try { items = await api("GET", "/api/handoffs?view=" + view); } catch (err) { $("conv-error").textContent = err.message; return; }
    $("queue-title").firstChild.textContent = (view === "queue" ? "Queue " : "Callbacks ");
    $("queue-count").textContent = "(" + items.length + ")";
    $("queue-empty").hidden = items.length > 0;
    const body = $("queue").querySelector("tbody");
    body.replaceChildren(...items.map((h) => {
      const row = el("tr", { "data-id": h.id, "data-conversation": h.conversation_id, class: [h.sla_breached ? "breached" : "", h.id === selected ? "selected" : ""].join(" "),
        onclick: () => select(h.id) },
        el("td", {}, el("span", { class: "prio " + h.priority }, h.priority)),
        el("td", {}, h.customer ? h.customer.full_name : "Visitor", " ",
          h.customer ? el("span", { class: "tier" }, h.customer.loyalty_tier) : null),
        el("td", {}, h.reason_label, h.assignee ? el("div", { class: "muted" }, "with " + h.assignee) : null),
        el("td", {}, [label(h.category) || "any", h.language].join(" · ")),
        el("td", {}, minutes(h.waiting_seconds)),
        el("td", { class: "due" }, time(h.first_response_due_at), h.sla_breached ? " (SLA breached)" : ""),
        el("td", {}, h.status === "queued" || h.status === "callback"
          ? el("button", { type: "button", class: "claim", onclick: (e) => { e.stopPropagation(); claim(h.id); } }, "Claim") : label(h.status)));
      return row;
    }));
  }

  async function claim(id) {
    try { await api("POST", "/api/handoffs/" + id + "/claim"); await select(id); refreshQueue(); }
    catch (err) { $("conv-error").textContent = err.message; }
  }

  // --- conversation ----------------------------------------------------------------------------------
  async function select(id) {
    selected = id; detail = null;
    $("conversation").hidden = false; $("customer").hidden = false; $("conv-error").textContent = "";
    await refreshConversation(true);
  }

  async function refreshConversation(loadCustomer) {
    if (!auth || !selected || view === "supervisor") return;
    let d;
    try { d = await api("GET", "/api/handoffs/" + selected); } catch (err) { $("conv-error").textContent = err.message; return; }
    const first = !detail || detail.id !== d.id;
    detail = d;
    const mine = d.status === "assigned" && d.assignee === me.username;
    $("conv-title").textContent = (d.customer ? d.customer.full_name : "Visitor") + " · " + d.reason_label;
    $("conv-meta").textContent = [label(d.status), d.priority + " priority", d.channel || "", d.language,
      d.ticket ? "ticket " + d.ticket : "", d.bot_paused ? "bot paused" : "bot active", d.transcript_live ? "live" : "saved transcript"]
      .filter(Boolean).join(" · ");
    $("conv-summary").textContent = d.summary;
    $("claim").disabled = !(d.status === "queued" || d.status === "callback");
    $("resolve").disabled = $("handback").disabled = !(mine || d.status === "callback");
    $("reply").disabled = !mine; $("reply-form").querySelector("button").disabled = !mine;

    // The customer's and the bot's lines from Rasa, then agents' notes and system lines from the CRM, by time.
    const lines = d.transcript.map((t) => ({ cls: t.from, text: t.text, at: t.at }));
    d.messages.filter((m) => m.kind !== "agent").forEach((m) => lines.push({ cls: m.kind, text: (m.kind === "note" ? "Note by " + m.author + ": " : "") + m.body, at: m.created_at }));
    lines.sort((a, b) => String(a.at || "").localeCompare(String(b.at || "")));
    const list = $("transcript");
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 20;
    list.replaceChildren(...lines.map((l) => el("li", { class: "line " + l.cls }, el("span", { class: "at" }, l.cls + " " + time(l.at)), l.text)));
    if (atBottom || first) list.scrollTop = list.scrollHeight;
    if (first || loadCustomer === true) loadCustomer360(d);
  }

  async function loadCustomer360(d) {
    const p = d.packet || {};
    const c = p.customer;
    $("profile").replaceChildren(c
      ? el("div", {}, el("b", {}, c.name), " ", el("span", { class: "tier" }, c.loyalty_tier), el("br"),
        "customer since " + c.customer_since + " · " + c.purchases + " purchases · speaks " + c.language, el("br"),
        c.email || "", c.phone ? " · " + c.phone : "")
      : el("p", { class: "muted" }, "Not verified: an anonymous visitor."));
    renderTicketBox(d);
    $("devices").replaceChildren(...(p.devices || []).map((dev) => {
      const box = el("div", { class: "device" }, el("b", {}, dev.label), el("br"), dev.serial + " · firmware " + (dev.firmware || "?"),
        el("br"), "last seen " + (dev.last_seen_at ? new Date(dev.last_seen_at).toLocaleString() : "never"),
        dev.open_faults.length ? el("div", { class: "error" }, "open faults: " + dev.open_faults.join(", ")) : null);
      const chart = el("div", { class: "muted" }, "Loading telemetry…");
      box.append(chart);
      loadTelemetry(dev.serial, chart);
      return box;
    }));
    if (!c) { $("tickets").replaceChildren(); $("purchases").replaceChildren(); return; }
    try {
      const full = await api("GET", "/api/customers/" + c.id);
      $("tickets").replaceChildren(...full.tickets.slice(0, 10).map((t) => el("li", {}, t.number + " " + t.title + " · " + label(t.status) + " · " + t.priority)));
      $("purchases").replaceChildren(...full.purchases.map((pu) => el("li", {}, pu.order_number + " · " + pu.model.name + " · " + pu.purchased_at.slice(0, 10))));
    } catch (err) { $("tickets").replaceChildren(el("li", { class: "error" }, err.message)); }
  }

  // The device's readings of the last 24 h (GET /api/devices/{serial}/telemetry: [{ts, readings}]), charted for
  // its first numeric metric; a device that never reported says so instead of showing an empty chart.
  async function loadTelemetry(serial, target) {
    try {
      const resp = await fetch("/api/devices/" + encodeURIComponent(serial) + "/telemetry", { headers: { Authorization: "Bearer " + auth.token } });
      if (!resp.ok) throw new Error("none");
      const rows = await resp.json();
      const last = rows.length ? rows[rows.length - 1].readings : {};
      const metric = Object.keys(last).find((k) => typeof last[k] === "number");
      if (!metric) throw new Error("none");
      const points = rows.map((r) => ({ t: Date.parse(r.ts), v: Number(r.readings[metric]) }))
        .filter((p) => !isNaN(p.t) && !isNaN(p.v));
      if (!points.length) throw new Error("none");
      target.replaceChildren(el("div", { class: "muted" }, metric.replace(/_/g, " ") + ": " + last[metric]), lineChart(points));
    } catch (e) { target.textContent = "No telemetry received yet."; }
  }

  function lineChart(points) {
    const W = 240, H = 60, ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg"); svg.setAttribute("width", W); svg.setAttribute("height", H);
    const ts = points.map((p) => p.t), vs = points.map((p) => p.v);
    const [t0, t1, v0, v1] = [Math.min(...ts), Math.max(...ts), Math.min(...vs), Math.max(...vs)];
    const x = (t) => 4 + (W - 8) * (t1 === t0 ? 0.5 : (t - t0) / (t1 - t0));
    const y = (v) => H - 4 - (H - 8) * (v1 === v0 ? 0.5 : (v - v0) / (v1 - v0));
    const path = document.createElementNS(ns, "polyline");
    path.setAttribute("points", points.map((p) => x(p.t) + "," + y(p.v)).join(" "));
    path.setAttribute("fill", "none"); path.setAttribute("stroke", "#0b5cad"); path.setAttribute("stroke-width", "1.5");
    svg.append(path);
    return svg;
  }

  function renderTicketBox(d) {
    const box = $("ticket-box");
    if (!d.ticket) { box.replaceChildren(el("p", { class: "muted" }, "No ticket.")); return; }
    const prio = el("select", { id: "ticket-priority", "aria-label": "Ticket priority" }, ...["low", "normal", "high", "urgent"].map((p) => el("option", { value: p }, p)));
    const stat = el("select", { id: "ticket-status", "aria-label": "Ticket status" }, ...["open", "in_progress", "waiting_customer", "resolved", "closed"].map((s) => el("option", { value: s }, label(s))));
    api("GET", "/api/tickets/" + d.ticket).then((t) => { prio.value = t.priority; stat.value = t.status; box.dataset.title = t.title; }).catch(() => {});
    const save = el("button", { type: "button", id: "ticket-save", onclick: async () => {
      try { await api("PATCH", "/api/tickets/" + d.ticket, { priority: prio.value, status: stat.value }); $("conv-error").textContent = "Ticket " + d.ticket + " updated."; }
      catch (err) { $("conv-error").textContent = err.message; } } }, "Update ticket");
    box.replaceChildren(el("div", {}, d.ticket + " "), prio, " ", stat, " ", save);
  }

  $("claim").addEventListener("click", () => selected && claim(selected));
  $("reply-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("reply").value.trim();
    if (!text || !selected) return;
    try {
      const r = await api("POST", "/api/handoffs/" + selected + "/messages", { body: text });
      $("reply").value = "";
      $("conv-error").textContent = r.delivered ? "" : (r.delivery_error || "Saved, not delivered yet.");
      refreshConversation();
    } catch (err) { $("conv-error").textContent = err.message; }
  });
  $("note-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("note").value.trim();
    if (!text || !selected) return;
    try { await api("POST", "/api/handoffs/" + selected + "/notes", { body: text }); $("note").value = ""; refreshConversation(); }
    catch (err) { $("conv-error").textContent = err.message; }
  });
  async function close(kind) {
    if (!selected) return;
    try {
      const r = await api("POST", "/api/handoffs/" + selected + "/" + kind, {});
      $("conv-error").textContent = r.bot_resumed ? "Handed back: the assistant has asked the customer for a rating." : ("Closed, but the assistant did not resume: " + r.resume_error);
      refreshConversation(); refreshQueue();
    } catch (err) { $("conv-error").textContent = err.message; }
  }
  $("resolve").addEventListener("click", () => close("resolve"));
  $("handback").addEventListener("click", () => close("handback"));

  // --- supervisor ------------------------------------------------------------------------------------
  async function refreshSupervisor() {
    let m;
    try { m = await api("GET", "/api/console/metrics?days=7"); } catch (err) { $("kpis").textContent = err.message; return; }
    const pct = (x) => x === null ? "–" : Math.round(x * 100) + "%";
    const kpi = (name, value, bad) => el("div", { class: "kpi" + (bad ? " bad" : "") }, el("b", {}, value), name);
    $("kpis").replaceChildren(
      kpi("waiting", m.queue.queued), kpi("with an agent", m.queue.assigned),
      kpi("SLA breaches now", m.sla_breaches.active, m.sla_breaches.active > 0), kpi("SLA breaches (7 d)", m.sla_breaches.period, m.sla_breaches.period > 0),
      kpi("CSAT average", m.csat.average === null ? "–" : m.csat.average + " / 5"), kpi("escalation rate", pct(m.escalation_rate)),
      kpi("bot containment", pct(m.containment_rate)), kpi("conversations", m.conversations));
    bars($("chart-load"), Object.entries(m.queue.by_priority).map(([k, v]) => [k, v.queued + v.assigned]));
    const SHORT = { customer_request: "asked", repeated_fallback: "misunderst.", frustration: "frustration", safety_fault: "safety",
      vip_critical: "VIP", repeat_contact: "repeat" };
    bars($("chart-reasons"), Object.entries(m.escalations_by_reason).map(([k, v]) => [SHORT[k] || k, v]));
    bars($("chart-csat"), Object.entries(m.csat.distribution));
    refreshAgents();
  }

  async function refreshAgents() {
    const agents = await api("GET", "/api/console/agents").catch(() => []);
    $("agents").querySelector("tbody").replaceChildren(...agents.map((a) => {
      const cats = el("input", { value: a.skills.categories.join(", "), "aria-label": "Categories of " + a.username, class: "skill-categories" });
      const langs = el("input", { value: a.skills.languages.join(", "), "aria-label": "Languages of " + a.username, class: "skill-languages", size: 8 });
      const split = (input) => input.value.split(",").map((x) => x.trim()).filter(Boolean);
      const save = el("button", { type: "button", class: "save-skills", onclick: async () => {
        try { await api("PUT", "/api/console/agents/" + encodeURIComponent(a.username) + "/skills", { categories: split(cats), languages: split(langs) });
          save.textContent = "Saved"; } catch (err) { save.textContent = "Error"; save.title = err.message; } } }, "Save");
      return el("tr", { "data-user": a.username }, el("td", {}, a.full_name + " (" + a.username + ")"), el("td", {}, a.role),
        el("td", {}, cats), el("td", {}, langs), el("td", {}, save));
    }));
  }

  function bars(svg, data) {
    const ns = "http://www.w3.org/2000/svg", W = +svg.getAttribute("width"), H = +svg.getAttribute("height");
    const max = Math.max(1, ...data.map((d) => d[1])), bw = (W - 20) / Math.max(1, data.length);
    svg.replaceChildren();
    data.forEach(([name, value], i) => {
      const h = (H - 40) * value / max, x = 10 + i * bw;
      const rect = document.createElementNS(ns, "rect");
      Object.entries({ x: x + 4, y: H - 22 - h, width: bw - 8, height: h, fill: "#0b5cad" }).forEach(([k, v]) => rect.setAttribute(k, v));
      const txt = document.createElementNS(ns, "text");
      Object.entries({ x: x + bw / 2, y: H - 8, "text-anchor": "middle", "font-size": "10" }).forEach(([k, v]) => txt.setAttribute(k, v));
      txt.textContent = name;
      const val = document.createElementNS(ns, "text");
      Object.entries({ x: x + bw / 2, y: H - 26 - h, "text-anchor": "middle", "font-size": "11" }).forEach(([k, v]) => val.setAttribute(k, v));
      val.textContent = value;
      svg.append(rect, txt, val);
    });
  }

  if (auth) start().catch(signOut);
})();
