// Drives martletd's dashboard in headless Chromium over the DevTools protocol (Debian's
// node-ws): loads the page with the token, waits for the test's client to be listed and the
// charts to have points, clicks its Disconnect button, waits for the row to say so, takes a
// screenshot, and prints what it saw as one JSON line.
//
//   node dashboard.js DEVTOOLS_PORT PAGE_URL CLIENT_ID SCREENSHOT_FILE
"use strict";
const http = require("http");
const fs = require("fs");
const WebSocket = require("ws");

const [devtools, pageURL, clientID, screenshot] = process.argv.slice(2);
const deadline = Date.now() + 40000;

function getJSON(path) {
  return new Promise((resolve, reject) => {
    http.get({ host: "127.0.0.1", port: Number(devtools), path }, res => {
      let body = "";
      res.on("data", d => (body += d));
      res.on("end", () => { try { resolve(JSON.parse(body)); } catch (e) { reject(e); } });
    }).on("error", reject);
  });
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

async function main() {
  let target;
  while (!target) {
    try { target = (await getJSON("/json/list")).find(t => t.type === "page"); } catch (e) { /* not up yet */ }
    if (!target) { if (Date.now() > deadline) throw new Error("no DevTools page"); await sleep(100); }
  }
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => { ws.on("open", resolve); ws.on("error", reject); });
  let id = 0;
  const pending = new Map();
  const consoleErrors = [];
  ws.on("message", data => {
    const m = JSON.parse(data);
    if (m.id && pending.has(m.id)) { pending.get(m.id)(m); pending.delete(m.id); }
    if (m.method === "Runtime.exceptionThrown") consoleErrors.push(m.params.exceptionDetails.text);
    if (m.method === "Runtime.consoleAPICalled" && m.params.type === "error") consoleErrors.push(JSON.stringify(m.params.args));
  });
  const send = (method, params) => new Promise(resolve => { id += 1; pending.set(id, resolve); ws.send(JSON.stringify({ id, method, params })); });
  const evaluate = async expression => (await send("Runtime.evaluate", { expression, returnByValue: true })).result.result.value;
  const waitFor = async (what, expression) => {
    while (!(await evaluate(expression))) {
      if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
      await sleep(100);
    }
  };
  await send("Runtime.enable", {});
  await send("Page.enable", {});
  await send("Emulation.setDeviceMetricsOverride", { width: 1280, height: 1400, deviceScaleFactor: 1, mobile: false });
  await send("Page.navigate", { url: pageURL });
  const row = `document.querySelector('tr[data-client="${clientID}"]')`;
  await waitFor("the client in the table", `${row} !== null && ${row}.cells[2].textContent === "connected"`);
  await waitFor("chart points", `[...document.querySelectorAll("canvas")].every(c => Number(c.dataset.points || 0) >= 3)`);
  const points = await evaluate(`[...document.querySelectorAll("canvas")].map(c => Number(c.dataset.points))`);
  const shot = await send("Page.captureScreenshot", { format: "png" });
  fs.writeFileSync(screenshot, Buffer.from(shot.result.data, "base64"));
  await evaluate(`${row}.querySelector("button.kick").click()`);
  await waitFor("the client to be gone or offline", `${row} === null || ${row}.cells[2].textContent === "offline"`);
  const errors = await evaluate(`document.getElementById("errors").textContent`);
  const status = await evaluate(`document.getElementById("status").textContent`);
  console.log(JSON.stringify({ points, errors, status, consoleErrors }));
  ws.close();
}

main().then(() => process.exit(0), e => { console.log(JSON.stringify({ failure: String(e) })); process.exit(1); });
