#!/usr/bin/python3
"""Python paho-mqtt against martletd: QoS 0/1/2 round trips, retained messages,
wildcards and (for v5) user properties. Exits 0 and prints OK on success; prints the
first difference and exits 1 otherwise.

usage: roundtrip.py PORT mqttv311|mqttv5
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

port = int(sys.argv[1])
version = mqtt.MQTTv5 if sys.argv[2] == "mqttv5" else mqtt.MQTTv311
prefix = "paho-%s-%d/" % (sys.argv[2], int(time.time() * 1000) % 100000)
received = []
lock = threading.Condition()


def on_message(client, userdata, msg):
    with lock:
        props = {}
        if version == mqtt.MQTTv5 and msg.properties is not None:
            props = dict(getattr(msg.properties, "UserProperty", []) or [])
        received.append((msg.topic, msg.payload, msg.qos, msg.retain, props))
        lock.notify_all()


def make(client_id):
    if version == mqtt.MQTTv5:
        c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5)
    else:
        c = mqtt.Client(client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)
    return c


def wait_for(n, timeout=5.0):
    deadline = time.time() + timeout
    with lock:
        while len(received) < n and time.time() < deadline:
            lock.wait(0.05)
        return list(received)


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


# A retained message published before anyone subscribes.
pub = make("paho-pub")
pub.connect("127.0.0.1", port, keepalive=30)
pub.loop_start()
info = pub.publish(prefix + "retained", b"kept", qos=1, retain=True)
info.wait_for_publish(5)

sub = make("paho-sub")
sub.on_message = on_message
sub.connect("127.0.0.1", port, keepalive=30)
sub.loop_start()
result, mid = sub.subscribe([(prefix + "qos/+", 2), (prefix + "retained", 1), (prefix + "deep/#", 0)])
if result != mqtt.MQTT_ERR_SUCCESS:
    fail("subscribe returned %d" % result)

got = wait_for(1)
if got[0][:4] != (prefix + "retained", b"kept", 1, 1):
    fail("retained message: %r" % (got[0],))

for qos in (0, 1, 2):
    props = None
    if version == mqtt.MQTTv5:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("qos", str(qos))]
    info = pub.publish(prefix + "qos/%d" % qos, ("payload-%d" % qos).encode(), qos=qos, properties=props)
    info.wait_for_publish(5)
pub.publish(prefix + "deep/a/b/c", b"deep", qos=0).wait_for_publish(5)

got = wait_for(5)
if len(got) != 5:
    fail("expected 5 messages, got %r" % (got,))
by_topic = {m[0]: m for m in got[1:]}
for qos in (0, 1, 2):
    m = by_topic.get(prefix + "qos/%d" % qos)
    if m is None or m[1] != ("payload-%d" % qos).encode() or m[2] != qos or m[3] != 0:
        fail("qos %d round trip: %r" % (qos, m))
    if version == mqtt.MQTTv5 and m[4].get("qos") != str(qos):
        fail("user property lost at qos %d: %r" % (qos, m[4]))
if by_topic.get(prefix + "deep/a/b/c", (None, None))[1] != b"deep":
    fail("wildcard # delivery: %r" % (got,))

# Clear the retained message so reruns start clean.
pub.publish(prefix + "retained", b"", qos=1, retain=True).wait_for_publish(5)
sub.disconnect()
pub.disconnect()
sub.loop_stop()
pub.loop_stop()
print("OK")
