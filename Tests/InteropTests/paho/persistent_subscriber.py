#!/usr/bin/python3
"""A persistent-session subscriber (clean session 0 / v5 clean start 0 with a session
expiry) with paho-mqtt. Connects as CLIENT_ID, subscribes to TOPIC at QOS, and writes every
message it receives as "payload dup" lines to OUTFILE until IDLE seconds pass without one
(or, with IDLE 0, right after SUBACK: that only creates the session). Prints whether the
broker said the session was present.

usage: persistent_subscriber.py PORT CLIENT_ID TOPIC QOS IDLE OUTFILE [mqttv311|mqttv5]
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

port, client_id, topic, qos, idle, outfile = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
version = mqtt.MQTTv5 if len(sys.argv) > 7 and sys.argv[7] == "mqttv5" else mqtt.MQTTv311
out = open(outfile, "a", buffering=1)
last = [time.monotonic()]
subscribed = threading.Event()
present = [None]


def on_connect(client, userdata, flags, rc, properties=None):
    present[0] = bool(flags.get("session present"))
    client.subscribe(topic, qos=qos)


def on_subscribe(client, userdata, mid, granted, properties=None):
    subscribed.set()


def on_message(client, userdata, msg):
    out.write("%s %d\n" % (msg.payload.decode(), 1 if msg.dup else 0))
    last[0] = time.monotonic()


if version == mqtt.MQTTv5:
    client = mqtt.Client(client_id=client_id, protocol=version)
else:
    client = mqtt.Client(client_id=client_id, protocol=version, clean_session=False)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
if version == mqtt.MQTTv5:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, keepalive=30, clean_start=False, properties=props)
else:
    client.connect("127.0.0.1", port, keepalive=30)
client.loop_start()
if not subscribed.wait(10):
    print("no SUBACK")
    sys.exit(1)
last[0] = time.monotonic()
while idle > 0 and time.monotonic() - last[0] < idle:
    time.sleep(0.05)
client.disconnect()
client.loop_stop()
print("session_present", present[0])
