// Agent console: the customer's consent (telemetry, proactive messages, marketing) and its history, in the
// customer pane. Read and changed through the consent API (GET/PUT /api/customers/{id}/consent); a change made
// here is recorded with source "console" and the signed-in user. The boxes only stage a change: "Save consent"
// sends the kinds that differ from what was last read (a partial update, so a change someone else made to
// another kind meanwhile is not overwritten), and the answer (current consent and history) is shown at once.
(function (C) {
  "use strict";
  const { $, el, api } = C;
  const KINDS = [
    ["telemetry", "Device telemetry", "the worker stores readings from their devices"],
    ["proactive", "Proactive messages", "device alerts and follow-ups the assistant sends first"],
    ["marketing", "Marketing", "offers and news"],
  ];
  const NAMES = { telemetry: "telemetry", proactive: "proactive messages", marketing: "marketing" };
  // The roles the consent API lets change consent (web_service/routes/privacy.py, ConsentUser).
  const EDITORS = ["agent", "supervisor", "admin", "privacy"];
  let shownFor = null, current = null;

  // Shows the consent of ``customerId`` (null: an unverified visitor, nothing to show).
  C.loadConsent = async function (customerId) {
    shownFor = customerId; current = null;
    const box = $("consent");
    $("consent-status").textContent = ""; $("consent-error").textContent = "";
    if (!customerId) { box.replaceChildren(el("p", { class: "muted" }, "No verified customer.")); return; }
    box.replaceChildren(el("p", { class: "muted" }, "Loading consent…"));
    try {
      const data = await api("GET", "/api/customers/" + customerId + "/consent");
      if (shownFor === customerId) render(data);
    } catch (err) {
      if (shownFor === customerId) { box.replaceChildren(); $("consent-error").textContent = "Consent: " + err.message; }
    }
  };

  function render(data) {
    current = data;
    const canEdit = C.me && EDITORS.indexOf(C.me.role) >= 0;
    const boxes = KINDS.map(([kind, title, hint]) => {
      const input = el("input", { type: "checkbox", id: "consent-" + kind, name: kind, "aria-describedby": "consent-hint-" + kind,
        checked: data.consent[kind], disabled: !canEdit, onchange: staged });
      return el("div", { class: "consent-kind" }, input,
        el("label", { for: "consent-" + kind }, title),
        el("span", { id: "consent-hint-" + kind, class: "muted hint" }, hint));
    });
    const save = el("button", { type: "submit", id: "consent-save", class: "small", disabled: true }, "Save consent");
    const form = el("form", { id: "consent-form", "aria-label": "Consent of " + customerName() },
      el("fieldset", {}, el("legend", {}, "Current consent"), ...boxes),
      canEdit ? el("div", { class: "row" }, save) : el("p", { class: "muted" }, "Your role can't change consent."));
    form.addEventListener("submit", submit);
    $("consent").replaceChildren(form, history(data.history));
  }

  function customerName() {
    const c = C.detail && C.detail.packet && C.detail.packet.customer;
    return c ? c.name : "the customer";
  }

  // The kinds whose box differs from the consent last read: {kind: granted}.
  function changes() {
    const out = {};
    KINDS.forEach(([kind]) => { const v = $("consent-" + kind).checked; if (v !== current.consent[kind]) out[kind] = v; });
    return out;
  }
  function staged() {
    const n = Object.keys(changes()).length;
    $("consent-save").disabled = n === 0;
    $("consent-status").textContent = n ? n + " unsaved consent change" + (n > 1 ? "s" : "") + "." : "";
  }

  async function submit(e) {
    e.preventDefault();
    const id = shownFor, diff = changes();
    if (!id || !Object.keys(diff).length) return;
    $("consent-save").disabled = true; $("consent-error").textContent = "";
    try {
      const data = await api("PUT", "/api/customers/" + id + "/consent", Object.assign({ source: "console" }, diff));
      if (shownFor !== id) return;
      render(data);
      $("consent-status").textContent = "Consent saved: " + Object.entries(diff)
        .map(([k, v]) => NAMES[k] + (v ? " given" : " withdrawn")).join(", ") + ".";
      $("consent-save").focus();
    } catch (err) {
      $("consent-error").textContent = "Consent not saved: " + err.message;
      if ($("consent-save")) $("consent-save").disabled = false;
    }
  }

  // Newest first, one line per change (the pane is narrow); the list scrolls and is then reachable by keyboard.
  function history(events) {
    const title = el("h4", { id: "consent-history-title" }, "Consent history");
    if (!events.length) return el("div", {}, title, el("p", { class: "muted", id: "consent-history" }, "No consent changes recorded."));
    const items = events.slice().reverse().map((ev) => el("li", { "data-kind": ev.kind, "data-granted": String(ev.granted),
      "data-source": ev.source, "data-actor": ev.actor },
      el("time", { datetime: ev.at }, C.time(ev.at)), " ",
      el("b", {}, NAMES[ev.kind] || ev.kind, ev.granted ? " given" : " withdrawn"),
      el("span", { class: "muted" }, " · " + ev.source + " · by " + ev.actor)));
    return el("div", {}, title, el("ol", { class: "plain consent-history", id: "consent-history", tabindex: "0",
      "aria-labelledby": "consent-history-title" }, ...items));
  }
})(window.C);
