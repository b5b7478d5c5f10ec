#!/usr/bin/python3
"""paho-mqtt over WebSocket (ws, or wss with CAFILE) against martletd, with a publisher on
plain TCP: the same broker path after the WebSocket layer. QoS 1, a small and a 100 KiB
message (many frames). Prints OK or what went wrong.

usage: ws_roundtrip.py WS_PORT TCP_PORT [CAFILE]
"""
import sys, threading, time
import paho.mqtt.client as mqtt

ws_port, tcp_port = int(sys.argv[1]), int(sys.argv[2])
cafile = sys.argv[3] if len(sys.argv) > 3 else None
received = []
done = threading.Event()
subscribed = threading.Event()


def on_message(c, u, m):
    received.append((m.topic, len(m.payload)))
    if len(received) == 2:
        done.set()


sub = mqtt.Client(client_id="ws-sub", transport="websockets")
sub.ws_set_options(path="/mqtt")
if cafile:
    sub.tls_set(ca_certs=cafile)
sub.on_message = on_message
sub.on_subscribe = lambda *a: subscribed.set()
sub.connect("localhost" if cafile else "127.0.0.1", ws_port, 30)
sub.loop_start()
sub.subscribe("ws/#", 1)
if not subscribed.wait(5):
    print("no SUBACK"); sys.exit(1)
pub = mqtt.Client(client_id="tcp-pub")
pub.connect("127.0.0.1", tcp_port, 30)
pub.loop_start()
pub.publish("ws/small", b"hello", qos=1).wait_for_publish(5)
pub.publish("ws/large", b"x" * 100_000, qos=1).wait_for_publish(5)
if not done.wait(10):
    print("received", received); sys.exit(1)
print("OK" if received == [("ws/small", 5), ("ws/large", 100_000)] else "received %r" % received)
