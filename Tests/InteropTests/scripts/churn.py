"""Short-lived MQTT clients with unique client ids, round after round, printing the broker's
RSS after each round: `churn.py PORT PER_ROUND ROUNDS BROKER_PID`.

Raw sockets rather than paho, so 10,000 connections take about a second. Rounds alternate
3.1.1 and 5.0 and, within a round, leaving with DISCONNECT or by just closing the socket."""
import socket
import struct
import sys
import time
import uuid


def utf8(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def connect_packet(client_id, v5):
    header = utf8("MQTT") + bytes([5 if v5 else 4, 0x02]) + struct.pack(">H", 60) + (b"\x00" if v5 else b"")
    body = header + utf8(client_id)
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])


port, per_round, rounds, pid = (int(a) for a in sys.argv[1:5])
for r in range(rounds):
    v5 = r % 2 == 1
    for i in range(per_round):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(connect_packet(uuid.uuid4().hex, v5))
        ack = s.recv(64)
        if not ack or ack[0] != 0x20:
            sys.exit(f"round {r}: no CONNACK ({ack!r})")
        if i % 2 == 0:
            s.sendall(b"\xe0\x00")
        s.close()
    time.sleep(1.0)
    print(f"{r} {rss_kib(pid)}", flush=True)
