// MQTT.js (Debian node-mqtt) against martletd over WebSocket: a retained message, QoS 0/1/2
// round trips and a will, with MQTT 3.1.1 and 5.0, over ws or (with CAFILE) wss. Prints one
// line per step and "OK" at the end, or what went wrong; exits by itself within 20 s.
//
// usage: NODE_PATH=/usr/share/nodejs node roundtrip.js URL [CAFILE]
'use strict'
const fs = require('fs')
const mqtt = require('mqtt')

const url = process.argv[2]
const ca = process.argv[3] ? fs.readFileSync(process.argv[3]) : undefined
setTimeout(() => { console.log('timed out'); process.exit(1) }, 20000).unref()

function connect (clientId, version, extra) {
  const options = Object.assign({ clientId, protocolVersion: version, reconnectPeriod: 0, connectTimeout: 5000 }, extra)
  if (ca) Object.assign(options, { ca, servername: 'localhost' })
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, options)
    c.once('connect', () => resolve(c))
    c.once('error', reject)
  })
}

function nextMessage (client, count) {
  const got = []
  return new Promise(resolve => {
    client.on('message', (topic, payload, packet) => {
      got.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain })
      if (got.length === count) resolve(got)
    })
  })
}

async function step (version) {
  const v = 'v' + version
  const pub = await connect(`js-pub-${v}`, version)
  await new Promise((resolve, reject) => pub.publish(`js/${v}/retained`, 'kept', { qos: 1, retain: true }, e => e ? reject(e) : resolve()))

  const sub = await connect(`js-sub-${v}`, version)
  const retained = nextMessage(sub, 1)
  await new Promise((resolve, reject) => sub.subscribe(`js/${v}/retained`, { qos: 1 }, e => e ? reject(e) : resolve()))
  const [r] = await retained
  if (r.payload !== 'kept' || !r.retain) throw new Error(`retained: ${JSON.stringify(r)}`)
  console.log(`${v} retained`)
  sub.removeAllListeners('message')

  const three = nextMessage(sub, 3)
  await new Promise((resolve, reject) => sub.subscribe(`js/${v}/q/#`, { qos: 2 }, e => e ? reject(e) : resolve()))
  for (const qos of [0, 1, 2]) {
    await new Promise((resolve, reject) => pub.publish(`js/${v}/q/${qos}`, `qos${qos}`, { qos }, e => e ? reject(e) : resolve()))
  }
  const got = (await three).sort((a, b) => a.qos - b.qos)
  for (const qos of [0, 1, 2]) {
    if (got[qos].topic !== `js/${v}/q/${qos}` || got[qos].qos !== qos || got[qos].payload !== `qos${qos}`) {
      throw new Error(`qos ${qos}: ${JSON.stringify(got)}`)
    }
  }
  console.log(`${v} qos 0 1 2`)
  sub.removeAllListeners('message')

  const will = nextMessage(sub, 1)
  await new Promise((resolve, reject) => sub.subscribe(`js/${v}/will`, { qos: 1 }, e => e ? reject(e) : resolve()))
  const doomed = await connect(`js-will-${v}`, version, { will: { topic: `js/${v}/will`, payload: 'gone', qos: 1, retain: false } })
  doomed.stream.destroy() // the connection drops without DISCONNECT
  const [w] = await will
  if (w.payload !== 'gone') throw new Error(`will: ${JSON.stringify(w)}`)
  console.log(`${v} will`)
  doomed.end(true)
  await new Promise(resolve => pub.publish(`js/${v}/retained`, '', { qos: 1, retain: true }, resolve))
  await Promise.all([new Promise(resolve => pub.end(false, {}, resolve)), new Promise(resolve => sub.end(false, {}, resolve))])
}

(async () => {
  try {
    await step(4)
    await step(5)
    console.log('OK')
    process.exit(0)
  } catch (e) {
    console.log('failed:', e && e.message ? e.message : e)
    process.exit(1)
  }
})()
