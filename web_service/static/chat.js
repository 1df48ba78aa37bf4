// Web chat for Rasa's socket.io channel (socket.io-client: reconnection with back-off, transport fallback).
// Tabs of one browser share the conversation: the transcript lives in localStorage, other tabs learn of each
// write from its "storage" event (which carries the stored value, so a tab never shows an entry the store has
// not got, nor misses one written while it was loading), and one tab (holding a Web Lock) writes the bot's
// replies, so every tab shows both the question and the answer exactly once (entries are keyed by id). Agents
// and their typing come from the web service's /chat/stream (server-sent events read with fetch; the session id
// goes in the body, never in a URL).
(function () {
  "use strict";
  const R = window.ChatRender;
  const base = document.querySelector('meta[name="rasa-socket-url"]').content.replace(/\/$/, "");
  const $ = (id) => document.getElementById(id);
  const list = $("messages"), form = $("composer"), input = $("input"), statusEl = $("status");
  const STORE = "appliance-care-chat", SOUND = "appliance-care-chat-sound", TITLE = document.title;
  const MAX_PHOTO = 5 * 1024 * 1024, PHOTO_TYPES = ["image/jpeg", "image/png", "image/webp"];
  const photos = new Map();  // entry id -> object URL of a photo sent from this tab
  let state = load(), confirmed = false, leader = false, unread = 0, typingTimer = null, lastSignal = 0, chain = Promise.resolve();
  const outbox = [];
  // Entries this tab wrote in this session. localStorage has no transaction across tabs (each tab's process keeps
  // its own copy), so two tabs writing at once can each save a transcript without the other's entry; a tab that
  // sees its own entry missing from the store puts it back.
  let written = [], writtenIn = null;  // ... and the session they belong to

  function load() {
    const s = JSON.parse(localStorage.getItem(STORE) || "null") || {};
    return { sessionId: s.sessionId || null, sessionKey: s.sessionKey || null, transcript: s.transcript || [], agent: s.agent || null,
      since: typeof s.since === "number" ? s.since : null };
  }
  function save() {
    state.transcript = state.transcript.slice(-200);
    localStorage.setItem(STORE, JSON.stringify(state));
  }
  function newId() { return Date.now().toString(36) + Math.random().toString(36).slice(2, 8); }

  // --- transcript --------------------------------------------------------------------------------------
  // What this tab shows, in order: "id:chosen" of each entry (a quick reply chosen in another tab re-renders).
  let onScreen = [];
  const shownKey = (e) => e.id + ":" + (e.chosen || "");
  function renderAll() {
    // Quick replies stay live only on the latest message of a person or the bot ("X joined" lines don't count).
    let last = state.transcript.length - 1;
    while (last > 0 && state.transcript[last].who === "system") last -= 1;
    list.replaceChildren(...state.transcript.flatMap((e, i) => R.render(photos.has(e.id) ? Object.assign({}, e, { photo: photos.get(e.id) }) : e, { live: i === last && !e.chosen })));
    onScreen = state.transcript.map(shownKey);
    list.scrollTop = list.scrollHeight;
  }
  function append(entry) {
    onScreen.push(shownKey(entry));
    if (entry.who !== "system") list.querySelectorAll(".buttons button").forEach((b) => { b.disabled = true; });  // old ones go stale
    if (photos.has(entry.id)) entry = Object.assign({}, entry, { photo: photos.get(entry.id) });
    R.render(entry, { live: true }).forEach((node) => list.appendChild(node));
    list.scrollTop = list.scrollHeight;
    announce(entry);
  }
  // A reply or a note: the typing indicator goes, screen readers hear it, a background tab counts it as unread.
  function announce(entry) {
    if (entry.who !== "user") {
      hideTyping();
      $("announcer").textContent = entry.who === "system" ? entry.text : R.speaker(entry) + " said: " + entry.text;
      if (document.hidden) { unread += 1; document.title = "(" + unread + ") New message · " + TITLE; if (leader) beep(); }
    }
  }
  // Where a bot message caught up late goes: before the bot's later ones (the newest keeps the live quick
  // replies); -1 for the end.
  function laterThan(transcript, entry) {
    if (entry.ts === undefined) return -1;
    return transcript.findIndex((e) => e.ts > entry.ts || (e.ts === entry.ts && e.part > entry.part));
  }
  // Writes an entry (re-reading the store first: another tab may have written meanwhile); the write is the
  // other tabs' signal.
  function add(entry) {
    entry.id = entry.id || newId();
    entry.at = entry.at || new Date().toISOString();
    const stored = load();
    state = Object.assign(stored, { sessionId: state.sessionId || stored.sessionId, sessionKey: state.sessionKey || stored.sessionKey });
    const later = laterThan(state.transcript, entry);
    if (later >= 0) state.transcript.splice(later, 0, entry);
    else state.transcript.push(entry);
    if (writtenIn !== state.sessionId) { written = []; writtenIn = state.sessionId; }
    written = written.concat([entry]).slice(-200);
    save();
    // Inserted before the end, or the cap dropped the oldest: everything again.
    if (later >= 0 || onScreen.length >= state.transcript.length) { renderAll(); announce(entry); }
    else append(entry);
  }
  // Another tab wrote the store: show its new entries once each, or everything again when what this tab shows
  // is no longer the start of the stored transcript (a quick reply chosen, a new session, the oldest dropped).
  window.addEventListener("storage", function (e) {
    if (e.key !== STORE) return;
    state = load();
    if (restore()) save();
    if (awaitingSession && state.sessionId && state.sessionId !== asked) requestSession();
    const keys = state.transcript.map(shownKey);
    if (onScreen.some((k, i) => keys[i] !== k)) {
      const seen = new Set(onScreen.map((k) => k.split(":")[0]));  // ids hold no ":" (newId: base 36)
      renderAll();
      state.transcript.filter((x) => !seen.has(x.id)).forEach(announce);
      return;
    }
    state.transcript.slice(onScreen.length).forEach(append);
  });
  // Puts back, in time order, entries this tab wrote that another tab's write dropped (not those older than the
  // stored transcript's first entry: the 200-entry cap dropped those). True when it changed the transcript.
  function restore() {
    if (state.sessionId !== writtenIn) return false;  // a new session: the old one's entries stay out
    const stored = new Set(state.transcript.map((x) => x.id)), first = state.transcript.length ? state.transcript[0].at : "";
    const lost = written.filter((x) => !stored.has(x.id) && x.at >= first);
    lost.forEach(function (x) {
      const byTs = laterThan(state.transcript, x);
      const at = byTs >= 0 ? byTs : state.transcript.findIndex((y) => y.at > x.at);
      state.transcript.splice(at < 0 ? state.transcript.length : at, 0, x);
    });
    return lost.length > 0;
  }

  list.addEventListener("click", function (e) {
    const btn = e.target.closest(".buttons button");
    if (!btn || btn.disabled) return;
    const row = btn.closest(".buttons");
    row.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    btn.classList.add("chosen");
    state = load();
    const entry = state.transcript.find((x) => x.id === row.dataset.for);
    if (entry) {
      entry.chosen = btn.dataset.payload; save();
      const at = onScreen.indexOf(entry.id + ":");  // this tab shows the choice already: no re-render for it
      if (at >= 0) onScreen[at] = shownKey(entry);
    }
    send(btn.dataset.payload, btn.textContent);
    input.focus();
  });

  // --- typing indicator --------------------------------------------------------------------------------
  function showTyping(text, ms) {
    $("typing-text").textContent = text;
    $("typing").hidden = false;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(hideTyping, ms);
  }
  function hideTyping() { $("typing").hidden = true; clearTimeout(typingTimer); }

  // --- sending ------------------------------------------------------------------------------------------
  function emit(event, data) {
    if (confirmed && socket.connected) socket.emit(event, data, acked);
    else outbox.push([event, data]);
  }
  // Rasa acknowledges a message once it has logged it (and answered): only then can the console read it in
  // the transcript, so the "sent" signal waits for the acknowledgement instead of racing Rasa.
  function acked() { signal("sent"); }
  function send(payload, shown) {
    if (!payload || !payload.trim()) return;
    if (shown !== null) add({ who: "user", text: shown || payload });
    emit("user_uttered", { message: payload, session_id: state.sessionId });
    if (!state.agent) showTyping("Assistant is typing…", 20000);
    lastSignal = 0;  // the next keystroke starts a new burst of typing: tell the console at once
  }
  // Tells the service team's console that the customer is typing or sent something (only recorded while a
  // person handles the conversation; the answer is always 204).
  function signal(kind) {
    if (!state.sessionId) return;
    if (kind === "typing") { if (Date.now() - lastSignal < 3000) return; lastSignal = Date.now(); }
    fetch("/chat/signal", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ session_id: state.sessionId, session_key: state.sessionKey, kind: kind }) }).catch(function () {});
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    const text = input.value;
    input.value = "";
    grow();
    send(text);
    input.focus();
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
  function grow() { input.style.height = "auto"; input.style.height = Math.min(input.scrollHeight + 2, 160) + "px"; }
  input.addEventListener("input", function () { grow(); if (input.value.trim()) signal("typing"); });

  // --- photos -------------------------------------------------------------------------------------------
  function notice(text) { $("notice").textContent = text; $("notice").hidden = !text; }
  $("photo").addEventListener("change", async function () {
    const file = this.files && this.files[0];
    this.value = "";
    if (!file) return;
    notice("");
    if (PHOTO_TYPES.indexOf(file.type) < 0) { notice("Only JPEG, PNG or WebP photos can be sent."); return; }
    if (file.size > MAX_PHOTO) { notice("That photo is larger than 5 MB. Please send a smaller one."); return; }
    if (!state.sessionId) { notice("Please wait until the chat is connected."); return; }
    statusEl.textContent = "sending photo…";
    try {
      const resp = await fetch("/chat/uploads", { method: "POST", body: file, headers: {
        "Content-Type": file.type, "X-Chat-Session": state.sessionId, "X-Chat-Key": state.sessionKey || "",
        "X-Filename": encodeURIComponent(file.name).slice(0, 200) } });
      const body = await resp.json().catch(() => ({}));
      if (!resp.ok) { notice(body.detail || "The photo could not be sent."); return; }
      const id = newId();
      photos.set(id, URL.createObjectURL(file));
      add({ id: id, who: "user", text: "Photo sent: " + file.name + (body.ticket ? " (added to ticket " + body.ticket + ")" : "") });
    } catch (err) { notice("The photo could not be sent: you seem to be offline."); }
    finally { statusEl.textContent = socket.connected ? "online" : "reconnecting…"; }
  });

  // --- the bot and agents -------------------------------------------------------------------------------
  const AGENT_LINE = /^([^\s:]{1,40}): ([\s\S]*)$/;
  function waitForAgent(ms) {
    return new Promise(function (resolve) {
      const until = Date.now() + ms;
      (function check() { if (state.agent || Date.now() > until) resolve(state.agent); else setTimeout(check, 50); })();
    });
  }
  async function onBot(data) {
    if (!leader) return;  // the leading tab writes the reply; this one shows it from the broadcast
    // Which bot event and piece this is (the channel's ts and part): shown once, whether it came live or caught up.
    const stamp = typeof data.ts === "number" ? { ts: data.ts, part: data.part || 0 } : {};
    if (stamp.ts !== undefined && load().transcript.some((e) => e.ts === stamp.ts && e.part === stamp.part)) return;
    const buttons = (data.quick_replies || data.buttons || []).map((b) => ({ title: b.title, payload: b.payload }));
    let text = data.text || "";
    if (!text && (data.image || data.attachment)) {
      const url = data.image || (data.attachment && data.attachment.payload && data.attachment.payload.src) || "";
      text = url ? "[Attachment](" + url + ")" : "[attachment]";
    }
    if (stamp.ts !== undefined) {
      // From this server the payload says whether it is an agent's line: no guessing, no waiting.
      const name = typeof data.agent_name === "string" && data.agent_name;
      if (name && text.startsWith(name + ": ")) add(Object.assign({ who: "agent", name: name, text: text.slice(name.length + 2), buttons: buttons }, stamp));
      else add(Object.assign({ who: "bot", text: text, buttons: buttons }, stamp));
      return;
    }
    const m = AGENT_LINE.exec(text);
    if (m) {
      // An agent's reply is relayed by the bot as "Name: text"; the stream says who the agent is.
      const agent = state.agent || await waitForAgent(1500);
      if (agent && agent === m[1]) { add({ who: "agent", name: agent, text: m[2], buttons: buttons }); return; }
    }
    add({ who: "bot", text: text, buttons: buttons });
  }

  // --- messages the socket missed -----------------------------------------------------------------------
  // A socket.io emit is at most once: a reload, a network drop or a Redis restart loses it. The leading tab asks
  // the web service for the pieces of the bot's messages since "since" (read from Rasa's tracker store, cut as the
  // channel cuts them) and onBot shows those whose (ts, part) it has not got, in ts order. "since" then trails the
  // server's clock by CATCH_UP_WINDOW seconds: a message whose turn was still being saved comes with the next call.
  // A refused or failed call (429, 503, offline, 15 s without an answer) leaves "since" where it was.
  const CATCH_UP_WINDOW = 120, CATCH_UP_PAGES = 5;
  let catching = false;
  async function catchUp() {
    if (catching || !leader || !confirmed || !state.sessionId) return;
    catching = true;
    try {
      const stored = load(), sid = stored.sessionId;
      // Bot entries stored before messages had a ts (since is null only there: a session starts it at 0) cannot be
      // matched: from such a transcript, only start the clock.
      const unmatched = stored.since === null && stored.transcript.some((e) => e.who !== "user" && e.who !== "system" && e.ts === undefined);
      let after = stored.since || 0;
      for (let page = 1; ; page += 1) {
        const body = await missedSince(sid, stored.sessionKey, after);
        if (!body) return;
        let next = null;
        await (chain = chain.then(async function () {
          if (load().sessionId !== sid) return;  // a new session meanwhile: these were the old one's
          if (!unmatched) for (const piece of body.pieces) await onBot(piece);
          next = body.more && !unmatched ? body.next_after : null;
          state = load();
          state.since = Math.max(state.since || 0, next !== null ? next : unmatched ? body.now : body.now - CATCH_UP_WINDOW);
          save();
        }).catch((e) => console.warn(e)));
        if (next === null || page >= CATCH_UP_PAGES) return;  // the rest with the next call
        after = next;
      }
    } finally { catching = false; }
  }
  async function missedSince(sid, key, after) {
    const abort = new AbortController(), timer = setTimeout(() => abort.abort(), 15000);
    try {
      const resp = await fetch("/chat/missed", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ session_id: sid, session_key: key, after: after }), signal: abort.signal });
      return resp.ok ? await resp.json() : null;
    } catch (err) { return null; }  // offline or too slow: the next call catches up
    finally { clearTimeout(timer); }
  }
  // The leading tab stores the agent and writes the "joined" / "left" lines; it compares with the agent it last
  // stored, not with the store, so another tab's write cannot make it skip a line. Other tabs only show the name.
  let agentStored = null;
  function setAgent(name) {
    name = name || null;
    if (!leader) { state.agent = name; return; }
    if (name === agentStored) return;
    const before = agentStored;
    agentStored = name;
    state = load();
    state.agent = name;
    save();
    if (before) add({ who: "system", text: before + " left the conversation" });
    if (name) add({ who: "system", text: name + " from our service team joined the conversation" });
  }

  async function stream() {
    let delay = 1000;
    for (;;) {
      try {
        const resp = await fetch("/chat/stream", { method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ session_id: state.sessionId, session_key: state.sessionKey }) });
        if (!resp.ok || !resp.body) throw new Error("stream " + resp.status);
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
            if (!line) continue;
            const ev = JSON.parse(line.slice(6));
            if (ev.type === "agent") setAgent(ev.name);
            else if (ev.type === "typing") showTyping((ev.name || state.agent || "Our agent") + " is typing…", 5000);
          }
        }
      } catch (err) { /* offline or restarting: try again with back-off */ }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 30000);
    }
  }

  // --- connection ---------------------------------------------------------------------------------------
  // WebSocket first: Rasa's socket.io server sends no CORS headers, so long-polling works only where the page
  // and Rasa share an origin (behind one reverse proxy); there it takes over when WebSocket is blocked.
  const socket = window.io(base, { path: "/socket.io", transports: ["websocket", "polling"], tryAllTransports: true,
    reconnectionDelay: 500, reconnectionDelayMax: 10000, randomizationFactor: 0.5 });
  socket.on("connect", function () {
    statusEl.textContent = "connecting…";
    requestSession();
  });
  // Only the tab that writes the bot's replies asks for a new conversation: tabs opened together would otherwise
  // each get one, and the replies of all but the stored one would reach no tab. Another tab joins the stored one.
  let awaitingSession = false, asked = null;
  function requestSession() {
    const stored = load();
    awaitingSession = !stored.sessionId && !leader;
    if (awaitingSession || !socket.connected) return;
    asked = stored.sessionId;
    // The key proves this browser owns the session: the id alone (agents see it) resumes nothing.
    socket.emit("session_request", { session_id: stored.sessionId, session_key: stored.sessionKey });
  }
  socket.on("session_confirm", function (data) {
    const sid = typeof data === "string" ? data : (data && data.session_id) || state.sessionId;
    state = load();
    // Only the leading tab stores a session. Given another than the stored one (the server refused its key),
    // this tab waits for the session the leading tab stores, and joins that.
    if (!leader && sid !== state.sessionId) { awaitingSession = true; return; }
    // A new session, or the server refused to resume ours (no valid key): the old transcript is not this one's.
    const renewed = !!state.sessionId && state.sessionId !== sid, first = !state.sessionId || renewed;
    if (renewed) { state.transcript = []; state.agent = agentStored = null; renderAll(); }
    if (first) state.since = 0;  // everything of a new conversation is new to this page
    state.sessionId = sid; state.sessionKey = (data && data.session_key) || null; save();
    confirmed = true;
    statusEl.textContent = "online";
    while (outbox.length) { const q = outbox.shift(); q[1].session_id = sid; socket.emit(q[0], q[1], acked); }
    // A new conversation is greeted by the tab that writes the bot's replies, once it knows it is that tab
    // (the lock may be granted after the session is confirmed).
    if (first) leading.then(function () { if (state.sessionId === sid && !load().transcript.length) send("/greet", null); });
    if (!streaming) { streaming = true; stream(); }
    reportPresence();
  });
  let streaming = false;
  socket.on("bot_uttered", function (data) { chain = chain.then(() => onBot(data || {})).catch((e) => console.warn(e)); });
  socket.on("disconnect", function () { confirmed = false; statusEl.textContent = "reconnecting…"; });
  socket.on("connect_error", function () { statusEl.textContent = "offline, retrying…"; });

  // Tells the server this chat is open, so the bot's proactive messages (a device fault, say) are pushed here, and
  // shows what the socket missed (on connecting, and every 20 s).
  function reportPresence() {
    if (!confirmed || !state.sessionId || !leader) return;
    catchUp();
    fetch("/chat/presence", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ session_id: state.sessionId, session_key: state.sessionKey }) }).catch(function () {});
  }
  setInterval(reportPresence, 20000);

  // --- unread signal and sound --------------------------------------------------------------------------
  let audio = null;
  function beep() {
    if (localStorage.getItem(SOUND) !== "on") return;
    try {
      audio = audio || new AudioContext();
      const osc = audio.createOscillator(), gain = audio.createGain();
      osc.frequency.value = 880; gain.gain.value = 0.05;
      osc.connect(gain).connect(audio.destination); osc.start(); osc.stop(audio.currentTime + 0.15);
    } catch (e) { /* no audio here */ }
  }
  function showSound() {
    const on = localStorage.getItem(SOUND) === "on";
    $("sound").setAttribute("aria-pressed", String(on));
    $("sound").textContent = on ? "Sound on" : "Sound off";
  }
  $("sound").addEventListener("click", function () {
    localStorage.setItem(SOUND, localStorage.getItem(SOUND) === "on" ? "off" : "on"); showSound();
  });
  document.addEventListener("visibilitychange", function () { if (!document.hidden) { unread = 0; document.title = TITLE; } });

  const leading = new Promise(function (resolve) {
    if (!navigator.locks) { leader = true; resolve(); return; }
    navigator.locks.request(STORE + "-leader", function () {
      leader = true; agentStored = load().agent || null; resolve(); reportPresence();
      if ((state.agent || null) !== agentStored) setAgent(state.agent);  // the stream told this tab first
      if (awaitingSession) requestSession();
      return new Promise(function () {});
    });
  });
  showSound();
  renderAll();
  input.focus();
})();
