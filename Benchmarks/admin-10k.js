// Used by Benchmarks/admin-10k.sh: opens the dashboard over DevTools, prints the load time
// to the first client page, then what the page shows after 20 s of 1 s refreshes.
"use strict";
const http = require("http"); const WebSocket = require("ws");
const [devtools, url] = process.argv.slice(2);
const getJSON = p => new Promise((res, rej) => http.get({host: "127.0.0.1", port: Number(devtools), path: p}, r => { let b = ""; r.on("data", d => b += d); r.on("end", () => res(JSON.parse(b))); }).on("error", rej));
const sleep = ms => new Promise(r => setTimeout(r, ms));
(async () => {
  let t; while (!t) { try { t = (await getJSON("/json/list")).find(x => x.type === "page"); } catch (e) {} if (!t) await sleep(100); }
  const ws = new WebSocket(t.webSocketDebuggerUrl); await new Promise(r => ws.on("open", r));
  let id = 0; const pend = new Map(); ws.on("message", d => { const m = JSON.parse(d); if (pend.has(m.id)) { pend.get(m.id)(m); pend.delete(m.id); } });
  const send = (method, params) => new Promise(r => { id++; pend.set(id, r); ws.send(JSON.stringify({id, method, params})); });
  const ev = async e => (await send("Runtime.evaluate", {expression: e, returnByValue: true})).result.result.value;
  await send("Page.enable", {});
  const start = Date.now();
  await send("Page.navigate", {url});
  while (!(await ev(`(document.getElementById("clients-total")||{}).textContent?.includes("of")`))) await sleep(20);
  const loaded = Date.now() - start;
  console.log(JSON.stringify({loaded_ms: loaded, total: await ev(`document.getElementById("clients-total").textContent`)}));
  await sleep(20000);
  console.log(JSON.stringify({rows: await ev(`document.querySelectorAll("#clients tbody tr").length`), status: await ev(`document.getElementById("status").textContent`)}));
  process.exit(0);
})();
