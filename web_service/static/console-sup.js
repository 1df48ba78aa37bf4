// Agent console: the supervisor's view (figures, routing skills, canned responses).
(function (C) {
  "use strict";
  const { $, el, api } = C;

  C.refreshSupervisor = async function () {
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
    renderCanned();
  };

  async function refreshAgents() {
    const agents = await api("GET", "/api/console/agents").catch(() => []);
    $("agents").querySelector("tbody").replaceChildren(...agents.map((a) => {
      const cats = el("input", { value: a.skills.categories.join(", "), "aria-label": "Categories of " + a.username, class: "skill-categories" });
      const langs = el("input", { value: a.skills.languages.join(", "), "aria-label": "Languages of " + a.username, class: "skill-languages", size: 8 });
      const split = (input) => input.value.split(",").map((x) => x.trim()).filter(Boolean);
      const save = el("button", { type: "button", class: "save-skills small", onclick: async () => {
        try { await api("PUT", "/api/console/agents/" + encodeURIComponent(a.username) + "/skills", { categories: split(cats), languages: split(langs) });
          save.textContent = "Saved"; } catch (err) { save.textContent = "Error"; save.title = err.message; } } }, "Save");
      return el("tr", { "data-user": a.username }, el("td", {}, a.full_name + " (" + a.username + ")"), el("td", {}, a.role),
        el("td", {}, cats), el("td", {}, langs), el("td", {}, save));
    }));
  }

  // --- canned responses: supervisors add, edit and delete them ------------------------------------------
  async function renderCanned() {
    await C.loadCanned();
    $("canned-list").replaceChildren(...C.canned.map((c) => {
      const title = el("input", { value: c.title, maxlength: 80, "aria-label": "Title of " + c.title, class: "canned-title" });
      const body = el("textarea", { rows: 2, maxlength: 4000, "aria-label": "Text of " + c.title, class: "canned-body" });
      body.value = c.body;
      const msg = el("span", { class: "muted", role: "status" });
      const save = el("button", { type: "button", class: "small", onclick: async () => {
        try { await api("PUT", "/api/console/canned/" + c.id, { title: title.value, body: body.value }); msg.textContent = "Saved"; C.loadCanned(); }
        catch (err) { msg.textContent = err.message; } } }, "Save");
      const del = el("button", { type: "button", class: "small danger", onclick: async () => {
        try { await api("DELETE", "/api/console/canned/" + c.id); renderCanned(); } catch (err) { msg.textContent = err.message; } } }, "Delete");
      return el("li", { "data-canned": c.id }, title, body, el("div", { class: "row" }, save, del, msg));
    }));
  }
  $("canned-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("canned-error").textContent = "";
    try {
      await api("POST", "/api/console/canned", { title: $("canned-title").value, body: $("canned-body").value });
      $("canned-title").value = ""; $("canned-body").value = "";
      renderCanned();
    } catch (err) { $("canned-error").textContent = err.message; }
  });

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
})(window.C);
