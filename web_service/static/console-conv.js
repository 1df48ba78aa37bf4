// Agent console: the open conversation (transcript, reply, note, claim, resolve, hand back, canned responses,
// photos) and the customer 360 (profile, ticket, devices with a telemetry chart, purchases).
(function (C) {
  "use strict";
  const { $, el, api, label } = C;
  let typingTimer = null, lastTyping = 0, loadedFor = null;

  C.select = async function (id) {
    C.selected = id; C.detail = null; loadedFor = null;
    $("conversation").hidden = false; $("customer").hidden = false; $("conv-error").textContent = "";
    $("customer-typing").textContent = "";
    C.pushUrl();
    document.querySelectorAll("#queue tbody tr").forEach((r) => r.classList.toggle("selected", Number(r.dataset.id) === id));
    await C.refreshConversation();
  };

  // Re-reads the open conversation. The customer's "sent" signal comes once Rasa has logged the message (the
  // widget waits for Rasa's acknowledgement; the server's transcript watch for other channels), so one read
  // shows it. One read at a time: events arriving meanwhile ask for one more read after it, so a burst of
  // events never piles up requests.
  let inflight = null, again = false;
  C.refreshConversation = function () {
    if (inflight) { again = true; return inflight; }
    inflight = read().finally(() => {
      inflight = null;
      if (again) { again = false; C.refreshConversation(); }
    });
    return inflight;
  };

  async function read() {
    if (!C.auth || !C.selected || C.view === "supervisor") return;
    const id = C.selected;
    let d;
    try { d = await api("GET", "/api/handoffs/" + id); } catch (err) { $("conv-error").textContent = err.message; return; }
    if (C.selected !== id) return;
    C.detail = d;
    render(d);
    if (loadedFor !== d.id) { loadedFor = d.id; loadCustomer360(d); C.loadPhotos(); }
  }

  function render(d) {
    const mine = d.status === "assigned" && d.assignee === C.me.username;
    $("conv-title").textContent = (d.customer ? d.customer.full_name : "Visitor") + " · " + d.reason_label;
    $("conv-meta").textContent = [label(d.status), d.priority + " priority", d.channel || "", d.language,
      d.ticket ? "ticket " + d.ticket : "", d.assignee ? "with " + d.assignee : "", d.bot_paused ? "bot paused" : "bot active",
      d.transcript_live ? "live" : "saved transcript"].filter(Boolean).join(" · ");
    $("conv-summary").textContent = d.summary;
    $("claim").disabled = !(d.status === "queued" || d.status === "callback");
    $("resolve").disabled = $("handback").disabled = !(mine || d.status === "callback");
    $("reply").disabled = !mine; $("reply-form").querySelector("button").disabled = !mine; $("canned").disabled = !mine;

    // The customer's and the bot's lines from Rasa, then agents' notes and system lines from the CRM, by time.
    const lines = d.transcript.map((t) => ({ cls: t.from, text: t.text, at: t.at }));
    d.messages.filter((m) => m.kind !== "agent").forEach((m) => lines.push({ cls: m.kind, text: (m.kind === "note" ? "Note by " + m.author + ": " : "") + m.body, at: m.created_at }));
    lines.sort((a, b) => String(a.at || "").localeCompare(String(b.at || "")));
    const list = $("transcript");
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 20;
    const WHO = { customer: "Customer", bot: "Bot", agent: "Agent", note: "Note", system: "System" };
    list.replaceChildren(...lines.map((l) => el("li", { class: "line " + l.cls, dir: "auto" },
      el("span", { class: "at" }, (WHO[l.cls] || l.cls) + " · ", el("time", { datetime: l.at || "" }, C.time(l.at))), l.text)));
    if (atBottom || loadedFor !== d.id) list.scrollTop = list.scrollHeight;
  }

  C.customerTyping = function () {
    $("customer-typing").textContent = "Customer is typing…";
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => { $("customer-typing").textContent = ""; }, 5000);
  };
  C.customerSent = function () { clearTimeout(typingTimer); $("customer-typing").textContent = ""; C.refreshConversation(); };

  // --- photos --------------------------------------------------------------------------------------------
  C.loadPhotos = async function () {
    const id = C.selected;
    const box = $("photos");
    let items = [];
    try { items = await api("GET", "/api/handoffs/" + id + "/attachments"); } catch (e) { return; }
    if (C.selected !== id) return;
    const shown = new Set(Array.from(box.querySelectorAll("figure")).map((f) => f.dataset.id));
    if (!items.length) { box.replaceChildren(); return; }
    if (!box.querySelector("h3")) box.replaceChildren(el("h3", {}, "Photos from the customer"));
    for (const a of items) {
      if (shown.has(String(a.id))) continue;
      const img = el("img", { alt: "Photo from the customer: " + a.filename, class: "photo" });
      box.append(el("figure", { "data-id": a.id }, img, el("figcaption", {}, a.filename + " · " + Math.round(a.size / 1024) + " KB · " + C.time(a.created_at))));
      C.blob("/api/handoffs/" + id + "/attachments/" + a.id).then((b) => { img.src = URL.createObjectURL(b); }).catch(() => { img.alt = "Photo unavailable"; });
    }
  };

  // --- customer 360 --------------------------------------------------------------------------------------
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
      const faults = el("ul", { class: "faults plain" });
      const box = el("div", { class: "device" }, el("b", {}, dev.label), el("br"), dev.serial + " · firmware " + (dev.firmware || "?"),
        el("br"), "last seen " + (dev.last_seen_at ? C.time(dev.last_seen_at) : "never"), faults);
      const chart = el("div", { class: "chart muted" }, "Loading telemetry…");
      box.append(chart);
      C.loadDevice(dev, faults, chart);
      return box;
    }));
    C.loadConsent(c ? c.id : null);
    if (!c) { $("tickets").replaceChildren(); $("purchases").replaceChildren(); return; }
    try {
      const full = await api("GET", "/api/customers/" + c.id);
      $("tickets").replaceChildren(...full.tickets.slice(0, 10).map((t) => el("li", {}, t.number + " " + t.title + " · " + label(t.status) + " · " + t.priority)));
      $("purchases").replaceChildren(...full.purchases.map((pu) => el("li", {}, pu.order_number + " · " + pu.model.name + " · " + pu.purchased_at.slice(0, 10))));
    } catch (err) { $("tickets").replaceChildren(el("li", { class: "error" }, err.message)); }
  }

  function renderTicketBox(d) {
    const box = $("ticket-box");
    if (!d.ticket) { box.replaceChildren(el("p", { class: "muted" }, "No ticket.")); return; }
    const prio = el("select", { id: "ticket-priority", "aria-label": "Ticket priority" }, ...["low", "normal", "high", "urgent"].map((p) => el("option", { value: p }, p)));
    const stat = el("select", { id: "ticket-status", "aria-label": "Ticket status" }, ...["open", "in_progress", "waiting_customer", "resolved", "closed"].map((s) => el("option", { value: s }, label(s))));
    api("GET", "/api/tickets/" + d.ticket).then((t) => { prio.value = t.priority; stat.value = t.status; box.dataset.title = t.title; }).catch(() => {});
    const save = el("button", { type: "button", id: "ticket-save", class: "small", onclick: async () => {
      try { await api("PATCH", "/api/tickets/" + d.ticket, { priority: prio.value, status: stat.value }); $("conv-error").textContent = "Ticket " + d.ticket + " updated."; }
      catch (err) { $("conv-error").textContent = err.message; } } }, "Update ticket");
    box.replaceChildren(el("div", {}, d.ticket), el("div", { class: "row" }, prio, stat, save));
  }

  // --- actions -------------------------------------------------------------------------------------------
  C.claim = async function (id) {
    id = id || C.selected;
    if (!id) return;
    try { await api("POST", "/api/handoffs/" + id + "/claim"); await C.select(id); C.refreshQueue(); $("reply").focus(); }
    catch (err) { $("conv-error").textContent = err.message; }
  };
  C.close = async function (kind) {
    if (!C.selected || $(kind === "resolve" ? "resolve" : "handback").disabled) return;
    try {
      const r = await api("POST", "/api/handoffs/" + C.selected + "/" + kind, {});
      $("conv-error").textContent = r.bot_resumed ? "Handed back: the assistant has asked the customer for a rating." : ("Closed, but the assistant did not resume: " + r.resume_error);
      C.refreshConversation(); C.refreshQueue();
    } catch (err) { $("conv-error").textContent = err.message; }
  };
  $("claim").addEventListener("click", () => C.claim());
  $("resolve").addEventListener("click", () => C.close("resolve"));
  $("handback").addEventListener("click", () => C.close("handback"));

  function enterSends(area, form) {
    area.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
    });
  }
  enterSends($("reply"), $("reply-form"));
  enterSends($("note"), $("note-form"));
  $("reply").addEventListener("input", () => {
    // The customer sees "<name> is typing…"; at most one signal every 3 s.
    if (!C.selected || !$("reply").value.trim() || Date.now() - lastTyping < 3000) return;
    lastTyping = Date.now();
    api("POST", "/api/handoffs/" + C.selected + "/typing").catch(() => {});
  });
  $("reply-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("reply").value.trim();
    if (!text || !C.selected) return;
    C.lastSendAt = performance.now();
    try {
      const r = await C.apiOnce("POST", "/api/handoffs/" + C.selected + "/messages", { body: text });
      $("reply").value = ""; lastTyping = 0;
      $("conv-error").textContent = r.delivered ? "" : (r.delivery_error || "Saved, not delivered yet.");
      C.refreshConversation();
    } catch (err) { $("conv-error").textContent = err.message; }
  });
  $("note-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("note").value.trim();
    if (!text || !C.selected) return;
    try { await api("POST", "/api/handoffs/" + C.selected + "/notes", { body: text }); $("note").value = ""; C.refreshConversation(); }
    catch (err) { $("conv-error").textContent = err.message; }
  });

  // --- canned responses ----------------------------------------------------------------------------------
  C.fillPlaceholders = function (body, d) {
    const name = d && d.customer ? d.customer.full_name : "";
    const values = { customer_name: name || "there", first_name: name ? name.split(" ")[0] : "there",
      ticket: (d && d.ticket) || "your ticket", agent_name: C.me ? C.me.full_name.split(" ")[0] : "" };
    return body.replace(/\{(customer_name|first_name|ticket|agent_name)\}/g, (_m, k) => values[k]);
  };
  C.loadCanned = async function () {
    try { C.canned = await api("GET", "/api/console/canned"); } catch (e) { C.canned = []; }
    $("canned").replaceChildren(el("option", { value: "" }, "Canned response…"), ...C.canned.map((c) => el("option", { value: c.id }, c.title)));
  };
  $("canned").addEventListener("change", () => {
    const item = C.canned.find((c) => String(c.id) === $("canned").value);
    $("canned").value = "";
    if (!item) return;
    const area = $("reply"), text = C.fillPlaceholders(item.body, C.detail);
    const at = area.selectionStart || area.value.length;
    area.value = area.value.slice(0, at) + text + area.value.slice(area.selectionEnd || at);
    area.focus();
    area.selectionStart = area.selectionEnd = at + text.length;
  });
})(window.C);
