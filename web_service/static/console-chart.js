// Agent console: a device's card (open faults with their titles) and its telemetry chart (uPlot, vendored):
// time axis in the agent's zone, the metric's unit on the value axis, fault reports as red markers.
(function (C) {
  "use strict";
  const { el, api } = C;

  C.loadDevice = async function (dev, faultList, target) {
    let info = { titles: {}, metrics: {}, history: [] };
    try { info = await api("GET", "/api/console/devices/" + encodeURIComponent(dev.serial) + "/faults"); } catch (e) { /* shown as codes */ }
    faultList.replaceChildren(...(dev.open_faults || []).map((code) =>
      el("li", { class: "fault" }, el("b", {}, code), " " + (info.titles[code] || "unknown fault"))));
    let rows = [];
    try { rows = await api("GET", "/api/devices/" + encodeURIComponent(dev.serial) + "/telemetry"); } catch (e) { rows = []; }
    const last = rows.length ? rows[rows.length - 1].readings : {};
    const metric = Object.keys(last).find((k) => typeof last[k] === "number");
    if (!metric) { target.textContent = "No telemetry received yet."; return; }
    const xs = [], ys = [];
    rows.forEach((r) => { const t = Date.parse(r.ts) / 1000, v = Number(r.readings[metric]); if (!isNaN(t) && !isNaN(v)) { xs.push(t); ys.push(v); } });
    const [name, unit] = info.metrics[metric] || [metric.replace(/_/g, " "), ""];
    const faults = (info.history || []).map((f) => ({ t: Date.parse(f.ts) / 1000, code: f.code }));
    target.classList.remove("muted");
    target.replaceChildren(el("p", { class: "chart-title" }, name + (unit ? " (" + unit + ")" : "") + ": now " + last[metric] + (unit ? " " + unit : "")));
    const holder = el("div", { class: "chart-canvas", role: "img",
      "aria-label": name + " over the last 24 hours" + (faults.length ? ", with " + faults.length + " fault reports" : "") });
    target.append(holder);
    draw(holder, xs, ys, name, unit, faults);
  };

  function draw(holder, xs, ys, name, unit, faults) {
    const width = () => Math.max(200, holder.clientWidth || 260);
    const faultMarkers = {
      hooks: { draw: [(u) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.strokeStyle = "#b3261e"; ctx.fillStyle = "#b3261e"; ctx.lineWidth = 1.5 * devicePixelRatio;
        ctx.font = (10 * devicePixelRatio) + "px system-ui";
        faults.forEach((f) => {
          const x = u.valToPos(f.t, "x", true);
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
          ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
          ctx.fillText(f.code, x + 3 * devicePixelRatio, u.bbox.top + 10 * devicePixelRatio);
        });
        ctx.restore();
      }] },
    };
    const opts = {
      width: width(), height: 150, legend: { show: false }, cursor: { y: false },
      scales: { x: { time: true } },
      axes: [
        { stroke: "#3b4754", grid: { stroke: "#eef1f4" }, size: 30 },
        { stroke: "#3b4754", grid: { stroke: "#eef1f4" }, size: 48, label: unit || name, labelSize: 14,
          values: (u, vals) => vals.map((v) => v + (unit && unit.length <= 3 ? " " + unit : "")) },
      ],
      series: [{}, { label: name, stroke: "#0b5cad", width: 1.5 }],
      plugins: [faultMarkers],
    };
    const chart = new window.uPlot(opts, [xs, ys], holder);
    if ("ResizeObserver" in window) new ResizeObserver(() => chart.setSize({ width: width(), height: 150 })).observe(holder);
  }
})(window.C);
