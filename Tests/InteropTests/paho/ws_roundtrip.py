#!/usr/bin/python3
"""paho-mqtt over WebSocket (ws, or wss with CAFILE) against martletd, with a publisher on
plain TCP: the same broker path after the WebSocket layer. QoS 0, 1 and 2 round trips, a
small and a 100 KiB message (many frames), a retained message published and received over
WebSocket, and the will of a WebSocket client whose connection drops. Prints OK or what went
wrong.

usage: ws_roundtrip.py WS_PORT TCP_PORT [CAFILE]
"""
import sys, threading, time
import paho.mqtt.client as mqtt

ws_port, tcp_port = int(sys.argv[1]), int(sys.argv[2])
cafile = sys.argv[3] if len(sys.argv) > 3 else None
host = "localhost" if cafile else "127.0.0.1"
received = []
lock = threading.Lock()
arrived = threading.Condition(lock)


def ws_client(client_id, will=None):
    c = mqtt.Client(client_id=client_id, transport="websockets")
    c.ws_set_options(path="/mqtt")
    if cafile:
        c.tls_set(ca_certs=cafile)
    if will:
        c.will_set(will, b"gone", qos=1)
    return c


def on_message(c, u, m):
    with arrived:
        received.append((m.topic, len(m.payload), m.qos, bool(m.retain)))
        arrived.notify_all()


def wait_for(count, timeout=10):
    deadline = time.monotonic() + timeout
    with arrived:
        while len(received) < count and time.monotonic() < deadline:
            arrived.wait(0.1)
        return list(received)


def fail(why):
    print(why)
    sys.exit(1)


subscribed = threading.Event()
sub = ws_client("ws-sub")
sub.on_message = on_message
sub.on_subscribe = lambda *a: subscribed.set()
sub.connect(host, ws_port, 30)
sub.loop_start()
sub.subscribe("ws/#", 2)
if not subscribed.wait(5):
    fail("no SUBACK")

pub = mqtt.Client(client_id="tcp-pub")
pub.connect("127.0.0.1", tcp_port, 30)
pub.loop_start()
for qos in (0, 1, 2):
    pub.publish("ws/qos%d" % qos, b"hello", qos=qos).wait_for_publish(5)
pub.publish("ws/large", b"x" * 100_000, qos=1).wait_for_publish(5)
got = sorted(wait_for(4))
if got != sorted([("ws/qos0", 5, 0, False), ("ws/qos1", 5, 1, False), ("ws/qos2", 5, 2, False), ("ws/large", 100_000, 1, False)]):
    fail("round trips: %r" % got)

# Retained, both ends over WebSocket: a new subscriber gets it with the retain flag.
keeper = ws_client("ws-keeper")
keeper.connect(host, ws_port, 30)
keeper.loop_start()
keeper.publish("kept/topic", b"kept", qos=1, retain=True).wait_for_publish(5)
late = ws_client("ws-late")
late.on_message = on_message
late.connect(host, ws_port, 30)
late.loop_start()
late.subscribe("kept/#", 1)
got = wait_for(5)
if got[4:] != [("kept/topic", 4, 1, True)]:
    fail("retained: %r" % got)

# A will: the WebSocket client's connection drops without DISCONNECT.
doomed = ws_client("ws-doomed", will="ws/will")
connected = threading.Event()
doomed.on_connect = lambda *a: connected.set()
doomed.connect(host, ws_port, 30)
doomed.loop_start()
if not connected.wait(5):
    fail("will client: no CONNACK")
doomed.loop_stop()
doomed.socket().close()
got = wait_for(6)
if got[5:] != [("ws/will", 4, 1, False)]:
    fail("will: %r" % got)
keeper.publish("kept/topic", b"", qos=1, retain=True).wait_for_publish(5)
print("OK")
for c in (sub, pub, keeper, late):
    c.disconnect()
    c.loop_stop()
