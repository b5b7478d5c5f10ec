#!/usr/bin/python3
"""Publishes COUNT messages (payload = their number) at QOS to TOPIC with paho-mqtt and
appends the number of every message the broker acknowledged (PUBACK for QoS 1, PUBCOMP for
QoS 2) to ACKFILE, one per line, flushed as it comes. Used by the crash tests: the broker is
killed while this runs, and what it acknowledged must survive. Exits when all are
acknowledged or the connection is lost.

usage: persistent_publisher.py PORT QOS COUNT TOPIC ACKFILE [mqttv311|mqttv5]
"""
import sys
import threading

import paho.mqtt.client as mqtt

port, qos, count, topic, ackfile = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
version = mqtt.MQTTv5 if len(sys.argv) > 6 and sys.argv[6] == "mqttv5" else mqtt.MQTTv311
done = threading.Event()
acks = open(ackfile, "a", buffering=1)
mids = {}
# Acknowledgements that came before publish() returned their mid (paho calls on_publish from
# its network thread; holding a lock of ours across publish() would deadlock with it).
early = set()
lock = threading.Lock()
acked = 0


def acknowledged(n):
    global acked
    acks.write("%d\n" % n)
    acked += 1
    if acked == count:
        done.set()


def on_publish(client, userdata, mid):
    with lock:
        n = mids.pop(mid, None)
        if n is None:
            early.add(mid)
        else:
            acknowledged(n)


def on_disconnect(client, userdata, *rest):
    done.set()


client = mqtt.Client(client_id="crash-publisher", protocol=version)
client.on_publish = on_publish
client.on_disconnect = on_disconnect
client.max_inflight_messages_set(100)
client.max_queued_messages_set(0)
client.connect("127.0.0.1", port, keepalive=30)
client.loop_start()
for n in range(1, count + 1):
    if done.is_set():
        break
    info = client.publish(topic, str(n).encode(), qos=qos)
    with lock:
        if info.mid in early:
            early.discard(info.mid)
            acknowledged(n)
        else:
            mids[info.mid] = n
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        break
done.wait(120)
client.loop_stop()
print("acked", acked)
