#!/usr/bin/python3
"""A paho-mqtt member of a shared subscription: subscribes to FILTER at QoS 1, prints
"ready" once subscribed, then prints each payload received, one per line, until SECONDS
pass with nothing new (before the first message, up to 15 s: a loaded machine may take a
while to start publishing).

usage: shared_member.py PORT mqttv311|mqttv5 CLIENT_ID FILTER SECONDS
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt

port, version_name, client_id, topic_filter, idle = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
version = mqtt.MQTTv5 if version_name == "mqttv5" else mqtt.MQTTv311
subscribed = threading.Event()
last = [time.monotonic()]
received = [0]
lock = threading.Lock()


def on_subscribe(client, userdata, mid, *rest):
    subscribed.set()


def on_message(client, userdata, msg):
    with lock:
        print(msg.payload.decode(), flush=True)
        last[0] = time.monotonic()
        received[0] += 1


try:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version)
except AttributeError:  # paho-mqtt 1.x
    client = mqtt.Client(client_id=client_id, protocol=version)
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect("127.0.0.1", int(port))
client.loop_start()
client.subscribe(topic_filter, qos=1)
if not subscribed.wait(10):
    print("not subscribed", file=sys.stderr)
    sys.exit(1)
print("ready", flush=True)
last[0] = time.monotonic()
while True:
    time.sleep(0.1)
    with lock:
        if time.monotonic() - last[0] > (idle if received[0] else max(idle, 15)):
            break
client.disconnect()
client.loop_stop()
