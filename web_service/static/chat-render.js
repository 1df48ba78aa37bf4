// Rendering for the web chat: one <li> per transcript entry, safe Markdown, the reader's own time zone.
// Entries: {id, who: "user" | "bot" | "agent" | "system", text, at: ISO time, name?, buttons?, photo?}.
window.ChatRender = (function () {
  "use strict";
  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });

  // Links open in a new tab without giving it this page; nothing but the allowed tags survives.
  window.DOMPurify.addHook("afterSanitizeAttributes", function (node) {
    if (node.tagName === "A") { node.setAttribute("target", "_blank"); node.setAttribute("rel", "noopener noreferrer nofollow"); }
  });
  const PURIFY = { ALLOWED_TAGS: ["p", "br", "strong", "em", "b", "i", "a", "ul", "ol", "li", "code", "pre", "blockquote", "del"],
    ALLOWED_ATTR: ["href"], ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|tel:)/i };

  // Raw HTML in a message is shown as text, never parsed (DOMPurify would remove it anyway, but parsing it
  // could already trip the page's Content-Security-Policy).
  const esc = (t) => String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  window.marked.use({ renderer: { html: (token) => esc(typeof token === "string" ? token : token.text) } });

  function markdown(text) {
    // A plain line right after a list item ends the list (the bot writes "- a\n- b\nWhat next?").
    const src = String(text || "").replace(/^((?:[-*]|\d+\.) .*)\n(?![-*] |\d+\. |\s|$)/gm, "$1\n\n");
    const html = window.marked.parse(src, { gfm: true, breaks: true, async: false });
    return window.DOMPurify.sanitize(html, PURIFY);
  }

  function when(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return "";
    return (Date.now() - d.getTime() > 20 * 3600 * 1000 ? dayFmt : timeFmt).format(d);
  }

  function speaker(entry) {
    if (entry.who === "user") return "You";
    if (entry.who === "agent") return (entry.name || "Agent") + " (service team)";
    return "Assistant";
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Returns the <li> elements of an entry: the message, and its quick replies (enabled only when live).
  function render(entry, opts) {
    const out = [];
    const li = el("li", "entry msg " + entry.who);
    li.dataset.id = entry.id;
    li.dataset.who = entry.who;
    if (entry.who === "system") {
      li.textContent = entry.text;
      out.push(li);
      return out;
    }
    if (entry.who !== "user") {
      const avatar = el("span", "avatar", entry.who === "agent" ? (entry.name || "A").charAt(0).toUpperCase() : "AI");
      avatar.setAttribute("aria-hidden", "true");
      li.appendChild(avatar);
    }
    const bubble = el("div", "bubble");
    bubble.setAttribute("dir", "auto");
    const who = el("span", "who", speaker(entry));
    bubble.appendChild(who);
    if (entry.photo) {
      const img = el("img", "photo");
      img.src = entry.photo;
      img.alt = "Photo you sent: " + (entry.text || "photo");
      bubble.appendChild(img);
    }
    const body = el("div", "text");
    body.setAttribute("dir", "auto");
    if (entry.who === "user") body.textContent = entry.text;
    else body.innerHTML = markdown(entry.text);  // sanitised by DOMPurify above
    bubble.appendChild(body);
    const t = el("time", "", when(entry.at));
    t.dateTime = entry.at;
    bubble.appendChild(t);
    li.appendChild(bubble);
    out.push(li);
    if (entry.buttons && entry.buttons.length) {
      const row = el("li", "buttons");
      row.dataset.for = entry.id;
      row.setAttribute("aria-label", "Suggested replies");
      entry.buttons.forEach(function (b) {
        const btn = el("button", "", b.title);
        btn.type = "button";
        btn.dataset.payload = b.payload;
        btn.disabled = !opts.live;
        if (entry.chosen === b.payload) btn.classList.add("chosen");
        row.appendChild(btn);
      });
      out.push(row);
    }
    return out;
  }

  return { render: render, markdown: markdown, when: when, speaker: speaker };
})();
