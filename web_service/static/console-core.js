// Agent console, shared parts: DOM helpers, the authenticated API, the push stream, notifications.
// The token lives in sessionStorage (it ends with the browser tab) and goes only in the Authorization header,
// also for the push stream (fetch-based server-sent events: EventSource can't send headers).
window.C = (function () {
  "use strict";
  const KEY = "appliance-care-console";
  const C = {
    auth: JSON.parse(sessionStorage.getItem(KEY) || "null"),
    me: null, view: "queue", selected: null, detail: null, items: [], canned: [],
  };
  C.$ = (id) => document.getElementById(id);

  C.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
    });
    children.flat().forEach((c) => { if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : String(c)); });
    return node;
  };

  C.saveAuth = function (auth) { C.auth = auth; if (auth) sessionStorage.setItem(KEY, JSON.stringify(auth)); else sessionStorage.removeItem(KEY); };

  C.api = async function (method, path, body, headers) {
    const resp = await fetch(path, {
      method, headers: Object.assign({ "Content-Type": "application/json" }, C.auth ? { Authorization: "Bearer " + C.auth.token } : {}, headers || {}),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (resp.status === 401) { C.onSignOut(); throw new Error("Your session has ended; please sign in again."); }
    if (resp.status === 204) return null;
    const data = await resp.json().catch(() => null);
    if (!resp.ok) {
      const err = new Error((data && (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail))) || resp.statusText);
      err.status = resp.status;
      throw err;
    }
    return data;
  };
  // A send that may be repeated safely: one Idempotency-Key for all tries, so the server stores it once. Retried
  // when no answer came or a proxy answered for a replica that died (502/503/504), after 0.5, 1 and 2 s.
  C.apiOnce = async function (method, path, body) {
    // getRandomValues, unlike randomUUID, also exists on a console served over plain HTTP.
    const key = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
    for (let attempt = 0; ; attempt++) {
      try { return await C.api(method, path, body, { "Idempotency-Key": key }); }
      catch (err) {
        const transient = err.status === undefined || err.status === 502 || err.status === 503 || err.status === 504;
        if (!transient || attempt >= 3 || !C.auth) throw err;
        await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
      }
    }
  };
  C.blob = async function (path) {
    const resp = await fetch(path, { headers: { Authorization: "Bearer " + C.auth.token } });
    if (!resp.ok) throw new Error(resp.statusText);
    return resp.blob();
  };

  C.minutes = (s) => s < 60 ? s + " s" : s < 5400 ? Math.floor(s / 60) + " min" : Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  const tf = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const df = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
  C.time = (iso) => { if (!iso) return ""; const d = new Date(iso); return (Date.now() - d > 20 * 3600e3 ? df : tf).format(d); };
  C.label = (s) => String(s || "").replace(/_/g, " ");

  // --- push stream ---------------------------------------------------------------------------------------
  // One long GET per console; the server sends ids of what changed and a keep-alive comment every 15 s.
  // On (re)connect a "hello" event makes the page re-read everything it shows (it may have missed events).
  let streamCtl = null;
  C.stream = async function (onEvent) {
    let delay = 1000;
    while (C.auth) {
      streamCtl = new AbortController();
      try {
        const resp = await fetch("/api/console/stream", { headers: { Authorization: "Bearer " + C.auth.token }, signal: streamCtl.signal });
        if (resp.status === 401) { C.onSignOut(); return; }
        if (!resp.ok || !resp.body) throw new Error("stream " + resp.status);
        C.$("live").textContent = "live";
        delay = 1000;
        const reader = resp.body.getReader(), dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const r = await reader.read();
          if (r.done) break;
          buf += dec.decode(r.value, { stream: true });
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const chunk = buf.slice(0, cut); buf = buf.slice(cut + 2);
            const line = chunk.split("\n").find((l) => l.startsWith("data: "));
            if (line) { try { onEvent(JSON.parse(line.slice(6))); } catch (e) { console.warn("event", e); } }
          }
        }
      } catch (err) { if (err.name === "AbortError") return; }
      C.$("live").textContent = "reconnecting…";
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 30000);
    }
  };
  C.stopStream = function () { if (streamCtl) streamCtl.abort(); };

  // --- notifications -------------------------------------------------------------------------------------
  const PREFS = "appliance-care-console-alerts";
  C.prefs = Object.assign({ sound: true, desktop: false }, JSON.parse(localStorage.getItem(PREFS) || "{}"));
  C.savePrefs = () => localStorage.setItem(PREFS, JSON.stringify(C.prefs));
  let audio = null, unseen = 0;
  const TITLE = document.title;
  C.notify = function (text) {
    C.notified = (C.notified || 0) + 1;
    if (document.hidden) { unseen += 1; document.title = "(" + unseen + ") " + text + " · " + TITLE; }
    if (C.prefs.sound) {
      try {
        audio = audio || new AudioContext();
        const osc = audio.createOscillator(), gain = audio.createGain();
        osc.frequency.value = 660; gain.gain.value = 0.06;
        osc.connect(gain).connect(audio.destination); osc.start(); osc.stop(audio.currentTime + 0.2);
      } catch (e) { /* no audio device */ }
    }
    if (C.prefs.desktop && "Notification" in window && Notification.permission === "granted" && document.hidden) {
      try { new Notification("Agent console", { body: text, tag: "queue" }); } catch (e) { /* not allowed here */ }
    }
  };
  document.addEventListener("visibilitychange", () => { if (!document.hidden) { unseen = 0; document.title = TITLE; } });

  // --- URL state: the view and the open conversation survive a reload ------------------------------------
  C.pushUrl = function () {
    const q = new URLSearchParams();
    if (C.view !== "queue") q.set("view", C.view);
    if (C.selected) q.set("conversation", String(C.selected));
    const url = location.pathname + (q.toString() ? "?" + q : "");
    if (url !== location.pathname + location.search) history.replaceState(null, "", url);
  };
  C.readUrl = function () {
    const q = new URLSearchParams(location.search);
    const view = q.get("view");
    if (["queue", "mine", "callbacks", "closed", "supervisor"].indexOf(view) >= 0) C.view = view;
    const id = parseInt(q.get("conversation") || "", 10);
    C.selected = isNaN(id) ? null : id;
  };
  return C;
})();
