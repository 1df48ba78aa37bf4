// Web chat for Rasa's socket.io channel. A small Socket.IO v5 / Engine.IO v4 client over a plain
// WebSocket, so that the page needs no third-party script.
(function () {
  "use strict";
  const base = document.querySelector('meta[name="rasa-socket-url"]').content.replace(/\/$/, "");
  const wsUrl = base.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket";
  const list = document.getElementById("messages");
  const form = document.getElementById("composer");
  const input = document.getElementById("input");
  const statusEl = document.getElementById("status");
  const storeKey = "appliance-care-chat";

  // The session id survives reloads so that the assistant keeps the conversation (and who you are).
  let state = JSON.parse(localStorage.getItem(storeKey) || "null") || { sessionId: null, transcript: [] };
  let ws = null, confirmed = false, retry = 0;
  const queue = [];

  function save() {
    state.transcript = state.transcript.slice(-200);
    localStorage.setItem(storeKey, JSON.stringify(state));
  }

  function render(entry) {
    const li = document.createElement("li");
    li.className = "msg " + entry.who;
    li.textContent = entry.text;
    li.dataset.who = entry.who;
    list.appendChild(li);
    if (entry.buttons && entry.buttons.length) {
      const row = document.createElement("li");
      row.className = "buttons";
      entry.buttons.forEach(function (b) {
        const btn = document.createElement("button");
        btn.type = "button";
        btn.textContent = b.title;
        btn.addEventListener("click", function () { send(b.payload, b.title); });
        row.appendChild(btn);
      });
      list.appendChild(row);
    }
    list.scrollTop = list.scrollHeight;
  }

  function add(entry) { state.transcript.push(entry); save(); render(entry); }

  function emit(event, data) {
    const packet = "42" + JSON.stringify([event, data]);
    if (ws && ws.readyState === WebSocket.OPEN && (confirmed || event === "session_request")) ws.send(packet);
    else queue.push([event, data]);
  }

  function send(payload, shown) {
    if (!payload || !payload.trim()) return;
    if (shown !== null) add({ who: "user", text: shown || payload });
    emit("user_uttered", { message: payload, session_id: state.sessionId });
  }

  function onEvent(name, data) {
    if (name === "session_confirm") {
      const first = !state.sessionId;
      state.sessionId = typeof data === "string" ? data : (data && data.session_id) || state.sessionId;
      save();
      confirmed = true;
      statusEl.textContent = "online";
      while (queue.length) { const q = queue.shift(); emit(q[0], Object.assign(q[1], { session_id: state.sessionId })); }
      if (first) send("/greet", null);
      reportPresence();
    } else if (name === "bot_uttered") {
      const buttons = (data.quick_replies || data.buttons || []).map(function (b) { return { title: b.title, payload: b.payload }; });
      const text = data.text || (data.attachment ? "[attachment]" : "");
      add({ who: "bot", text: text, buttons: buttons });
    }
  }

  // Tells the server this chat is open, so the bot's proactive messages (a device fault, say) are pushed
  // here now instead of waiting for the customer's next visit.
  function reportPresence() {
    if (!confirmed || !state.sessionId) return;
    fetch("/chat/presence", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ session_id: state.sessionId }),
    }).catch(function () {});
  }
  setInterval(reportPresence, 20000);

  function connect() {
    statusEl.textContent = "connecting…";
    confirmed = false;
    ws = new WebSocket(wsUrl);
    ws.onmessage = function (msg) {
      const data = String(msg.data);
      if (data === "2") { ws.send("3"); return; }                // Engine.IO ping → pong
      if (data[0] === "0") { ws.send("40"); return; }             // Engine.IO open → Socket.IO connect
      if (data.startsWith("40")) {                                // namespace connected
        retry = 0;
        ws.send("42" + JSON.stringify(["session_request", { session_id: state.sessionId }]));
        return;
      }
      if (data.startsWith("42")) {
        try { const arr = JSON.parse(data.slice(2)); onEvent(arr[0], arr[1]); } catch (e) { console.warn("bad packet", e); }
      }
    };
    ws.onclose = function () {
      statusEl.textContent = "reconnecting…";
      confirmed = false;
      retry = Math.min(retry + 1, 6);
      setTimeout(connect, 500 * Math.pow(2, retry - 1));
    };
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    const text = input.value;
    input.value = "";
    send(text);
  });

  state.transcript.forEach(render);
  connect();
})();
