extension AdminAPI {
    /// `GET /` on the metrics endpoint: the dashboard, one self-contained page (no framework, no
    /// CDN). It asks for a token (or takes `#token=…` from the URL), then reads the admin API
    /// once a second. Errors of the page's script are shown in `#errors`.
    static let dashboardPage = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <title>Martlet</title>
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <style>
      body { font: 14px system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
      header { background: #1d2330; color: #fff; padding: 10px 20px; display: flex; gap: 20px; align-items: center; }
      header h1 { font-size: 18px; margin: 0; }
      main { padding: 16px 20px; display: grid; gap: 16px; }
      section { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 12px 16px; }
      h2 { font-size: 15px; margin: 0 0 8px; }
      .charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: 12px; }
      .chart canvas { width: 100%; height: 120px; border: 1px solid #eef0f4; }
      .chart .now { font-weight: 600; }
      table { border-collapse: collapse; width: 100%; }
      th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef0f4; white-space: nowrap; }
      th[data-sort] { cursor: pointer; text-decoration: underline dotted; }
      td.num, th.num { text-align: right; }
      button { cursor: pointer; }
      #errors { color: #b00020; white-space: pre-wrap; }
      #login[hidden], #app[hidden] { display: none; }
      .muted { color: #6b7385; }
    </style>
    </head>
    <body>
    <header><h1>Martlet</h1><span id="status" class="muted">not connected</span></header>
    <div id="errors"></div>
    <main>
      <section id="login">
        <h2>Admin token</h2>
        <form id="token-form"><input id="token" type="password" size="40" placeholder="a line of admin_token_file"> <button>Open</button></form>
      </section>
      <div id="app" hidden>
        <section>
          <h2>Now</h2>
          <div class="charts">
            <div class="chart"><div>Connections <span class="now" id="now-connections">–</span></div><canvas id="chart-connections" width="560" height="120"></canvas></div>
            <div class="chart"><div>Messages in / out per second <span class="now" id="now-messages">–</span></div><canvas id="chart-messages" width="560" height="120"></canvas></div>
            <div class="chart"><div>Drops per second <span class="now" id="now-drops">–</span></div><canvas id="chart-drops" width="560" height="120"></canvas></div>
            <div class="chart"><div>Queued bytes <span class="now" id="now-queued">–</span></div><canvas id="chart-queued" width="560" height="120"></canvas></div>
          </div>
          <div id="drop-reasons" class="muted"></div>
        </section>
        <section>
          <h2>Clients <span class="muted" id="clients-total"></span></h2>
          <div>Client id prefix <input id="prefix" size="20"> <button id="prev">◀</button> <button id="next">▶</button></div>
          <table id="clients"><thead><tr>
            <th data-sort="id">Client id</th><th>User</th><th>State</th><th>Address</th><th>Protocol</th>
            <th class="num">Subs</th><th class="num" data-sort="queued">Queued bytes</th><th class="num">In flight</th>
            <th class="num" data-sort="dropped">Dropped</th><th></th></tr></thead><tbody></tbody></table>
        </section>
        <section>
          <h2>Offline sessions <span class="muted" id="sessions-total"></span></h2>
          <table id="sessions"><thead><tr><th>Client id</th><th>User</th><th class="num">Queued</th><th class="num">Bytes</th><th>Expiry</th></tr></thead><tbody></tbody></table>
        </section>
        <section>
          <h2>Retained topics</h2>
          <form id="retained-form">Filter <input id="retained-match" value="#" size="30"> <button>Search</button> <span class="muted" id="retained-total"></span></form>
          <table id="retained"><thead><tr><th>Topic</th><th class="num">QoS</th><th class="num">Bytes</th><th>Payload</th></tr></thead><tbody></tbody></table>
        </section>
        <section>
          <h2>Listeners</h2>
          <table id="listeners"><thead><tr><th>Address</th><th>Bound</th><th>TLS</th><th>WebSocket</th><th>PROXY</th><th>Anonymous</th></tr></thead><tbody></tbody></table>
        </section>
      </div>
    </main>
    <script>
    "use strict";
    const errors = document.getElementById("errors");
    window.addEventListener("error", e => { errors.textContent += "error: " + e.message + "\n"; });
    window.addEventListener("unhandledrejection", e => { errors.textContent += "error: " + e.reason + "\n"; });
    let token = sessionStorage.getItem("martlet-token") || "";
    const fromURL = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromURL) token = fromURL;
    const state = { sort: "id", offset: 0, limit: 50, last: null, series: { connections: [], received: [], sent: [], drops: [], queued: [] } };

    async function api(path, method) {
      const r = await fetch("/api/v1" + path, { method: method || "GET", headers: { Authorization: "Bearer " + token } });
      if (r.status === 204) return null;
      const body = await r.json();
      if (!r.ok) throw new Error(r.status + ": " + body.error);
      return body;
    }
    function cell(row, text, cls) { const td = row.insertCell(); td.textContent = text === undefined || text === null ? "–" : String(text); if (cls) td.className = cls; return td; }
    function fill(table, items, columns) {
      const body = table.tBodies[0]; body.replaceChildren();
      for (const item of items) { const row = body.insertRow(); columns(row, item); }
    }
    function push(series, value) { series.push(value); if (series.length > 60) series.shift(); }
    function draw(id, lines) {
      const canvas = document.getElementById(id), g = canvas.getContext("2d");
      g.clearRect(0, 0, canvas.width, canvas.height);
      const max = Math.max(1, ...lines.flatMap(l => l.values));
      g.fillStyle = "#6b7385"; g.font = "11px sans-serif"; g.fillText(String(Math.round(max)), 4, 12);
      for (const line of lines) {
        g.strokeStyle = line.color; g.lineWidth = 2; g.beginPath();
        line.values.forEach((v, i) => {
          const x = canvas.width * i / 59, y = canvas.height - 4 - (canvas.height - 20) * v / max;
          if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
        });
        g.stroke();
      }
      canvas.dataset.points = String(lines[0].values.length);
    }
    function sum(o) { return o ? Object.values(o).reduce((a, b) => a + b, 0) : 0; }

    async function refreshStats() {
      const s = await api("/stats");
      const now = Date.now();
      if (state.last) {
        const dt = Math.max(0.001, (now - state.last.at) / 1000);
        push(state.series.received, (s.messages_received_total - state.last.s.messages_received_total) / dt);
        push(state.series.sent, (s.messages_sent_total - state.last.s.messages_sent_total) / dt);
        push(state.series.drops, (sum(s.messages_dropped_total) - sum(state.last.s.messages_dropped_total)) / dt);
      } else {
        push(state.series.received, 0); push(state.series.sent, 0); push(state.series.drops, 0);
      }
      push(state.series.connections, s.connections);
      push(state.series.queued, s.queued_bytes);
      state.last = { s: s, at: now };
      draw("chart-connections", [{ values: state.series.connections, color: "#2962ff" }]);
      draw("chart-messages", [{ values: state.series.received, color: "#00897b" }, { values: state.series.sent, color: "#f57c00" }]);
      draw("chart-drops", [{ values: state.series.drops, color: "#c62828" }]);
      draw("chart-queued", [{ values: state.series.queued, color: "#6a1b9a" }]);
      document.getElementById("now-connections").textContent = s.connections;
      document.getElementById("now-messages").textContent = Math.round(state.series.received.at(-1)) + " / " + Math.round(state.series.sent.at(-1));
      document.getElementById("now-drops").textContent = Math.round(state.series.drops.at(-1));
      document.getElementById("now-queued").textContent = s.queued_bytes;
      document.getElementById("drop-reasons").textContent = "drops since start: " +
        Object.entries(s.messages_dropped_total || {}).map(([k, v]) => k.replace("reason=", "") + " " + v).join(", ");
    }

    async function refreshClients() {
      const prefix = document.getElementById("prefix").value;
      const page = await api("/clients?sort=" + state.sort + "&offset=" + state.offset + "&limit=" + state.limit +
        (prefix ? "&prefix=" + encodeURIComponent(prefix) : ""));
      document.getElementById("clients-total").textContent = (page.total ? (page.offset + 1) + "–" + (page.offset + page.items.length) + " of " : "") + page.total;
      fill(document.getElementById("clients"), page.items, (row, c) => {
        row.dataset.client = c.id;
        cell(row, c.id); cell(row, c.username);
        cell(row, c.connected ? (c.stalled ? "stalled" : c.lagging ? "lagging" : "connected") : "offline");
        cell(row, c.remote_address); cell(row, c.protocol + " over " + (c.tls_version ? c.transport + " " + c.tls_version : (c.transport || "?")));
        cell(row, c.subscriptions, "num");
        cell(row, c.queued_bytes, "num"); cell(row, c.inflight, "num"); cell(row, c.dropped_total, "num");
        const td = row.insertCell();
        if (c.connected) {
          const b = document.createElement("button"); b.textContent = "Disconnect"; b.className = "kick";
          b.onclick = () => api("/clients/" + encodeURIComponent(c.id), "DELETE").then(refreshClients).catch(report);
          td.appendChild(b);
        }
      });
    }

    async function refreshSessions() {
      const page = await api("/sessions?limit=50");
      document.getElementById("sessions-total").textContent = page.total;
      fill(document.getElementById("sessions"), page.items, (row, s) => {
        cell(row, s.id); cell(row, s.username); cell(row, s.queued_messages, "num"); cell(row, s.queued_bytes, "num");
        cell(row, s.session_expiry_s === undefined ? "never" : s.session_expiry_s + " s");
      });
    }

    async function refreshRetained() {
      const page = await api("/topics/retained?limit=100&match=" + encodeURIComponent(document.getElementById("retained-match").value || "#"));
      document.getElementById("retained-total").textContent = page.total + " topics";
      fill(document.getElementById("retained"), page.items, (row, r) => { cell(row, r.topic); cell(row, r.qos, "num"); cell(row, r.bytes, "num"); cell(row, r.payload); });
    }

    async function refreshListeners() {
      const list = await api("/listeners");
      fill(document.getElementById("listeners"), list, (row, l) => {
        cell(row, l.host + ":" + l.port); cell(row, l.bound); cell(row, l.tls ? "yes" : "no");
        cell(row, l.websocket ? "yes" : "no"); cell(row, l.proxy_protocol ? "yes" : "no"); cell(row, l.allow_anonymous ? "yes" : "no");
      });
    }

    function report(e) { document.getElementById("status").textContent = String(e.message || e); }

    async function tick() {
      try {
        await Promise.all([refreshStats(), refreshClients(), refreshSessions()]);
        document.getElementById("status").textContent = "live, " + new Date().toLocaleTimeString();
      } catch (e) { report(e); }
    }

    function open() {
      sessionStorage.setItem("martlet-token", token);
      document.getElementById("login").hidden = true;
      document.getElementById("app").hidden = false;
      refreshListeners().catch(report); refreshRetained().catch(report);
      tick(); setInterval(tick, 1000);
    }

    document.getElementById("token-form").onsubmit = e => { e.preventDefault(); token = document.getElementById("token").value.trim(); open(); };
    document.getElementById("retained-form").onsubmit = e => { e.preventDefault(); refreshRetained().catch(report); };
    document.getElementById("prefix").oninput = () => { state.offset = 0; refreshClients().catch(report); };
    document.getElementById("prev").onclick = () => { state.offset = Math.max(0, state.offset - state.limit); refreshClients().catch(report); };
    document.getElementById("next").onclick = () => { state.offset += state.limit; refreshClients().catch(report); };
    for (const th of document.querySelectorAll("th[data-sort]")) th.onclick = () => { state.sort = th.dataset.sort; refreshClients().catch(report); };
    if (token) open();
    </script>
    </body>
    </html>
    """#
}
