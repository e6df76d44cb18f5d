// Shared by the city and home pages: the API token, authorised fetches, and a
// server-sent-events reader over fetch (EventSource cannot send an Authorization header).
"use strict";
const Eco = (() => {
  const KEY = "eco-twin-token";
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) { sessionStorage.setItem(KEY, fromHash); history.replaceState(null, "", location.pathname); }
  const token = () => sessionStorage.getItem(KEY) || "";

  function askToken(message) {
    const box = document.getElementById("token-box");
    if (!box) return;
    box.hidden = false;
    box.querySelector(".msg").textContent = message || "";
    box.querySelector("form").onsubmit = (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY, box.querySelector("input").value.trim());
      location.reload();
    };
  }

  async function api(path, opts = {}) {
    const headers = Object.assign({ Authorization: "Bearer " + token() }, opts.headers || {});
    const res = await fetch(path, Object.assign({}, opts, { headers }));
    if (res.status === 401) { askToken("The token was refused: paste the read token."); throw new Error("unauthorised"); }
    const body = res.headers.get("content-type", "").includes("json") ? await res.json() : await res.text();
    if (!res.ok) { const e = new Error(body.detail || res.statusText); e.status = res.status; e.body = body; throw e; }
    return body;
  }

  // Reads "event: NAME\ndata: JSON\n\n" frames; reconnects after a pause when the stream ends.
  async function stream(path, onEvent) {
    for (;;) {
      try {
        const res = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
        if (res.status === 401) { askToken("The token was refused: paste the read token."); return; }
        const reader = res.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const frame = buf.slice(0, i); buf = buf.slice(i + 2);
            let name = "message", data = "";
            for (const line of frame.split("\n")) {
              if (line.startsWith("event: ")) name = line.slice(7);
              else if (line.startsWith("data: ")) data += line.slice(6);
            }
            if (data) onEvent(name, JSON.parse(data));
          }
        }
      } catch (e) { /* network blip: retry below */ }
      await new Promise((r) => setTimeout(r, 2000));
    }
  }

  const fmt = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v)) ? "–" : Number(v).toFixed(d);
  const time = (ms) => new Date(ms).toISOString().slice(11, 16);
  const date = (ms) => new Date(ms).toISOString().slice(0, 10);
  const el = (tag, attrs = {}, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  function table(target, columns, rows) {
    const t = el("table");
    const head = el("tr");
    columns.forEach((c) => head.appendChild(el("th", {}, c[0])));
    t.appendChild(head);
    rows.forEach((r) => {
      const tr = el("tr");
      columns.forEach((c) => {
        const v = c[1](r);
        const td = el("td");
        if (v instanceof Node) td.appendChild(v); else td.textContent = v;
        tr.appendChild(td);
      });
      t.appendChild(tr);
    });
    target.replaceChildren(t);
  }
  const pill = (text, cls) => el("span", { class: "pill " + (cls || text) }, text.replace("_", " "));
  return { api, stream, token, askToken, fmt, time, date, el, table, pill };
})();
