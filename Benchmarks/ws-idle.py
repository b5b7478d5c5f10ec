#!/usr/bin/python3
"""Idle memory per connection, plain TCP against WebSocket: opens N MQTT connections (each
CONNECT answered), holds them, and prints the broker's RSS growth per connection.

usage: python3 Benchmarks/ws-idle.py BROKER_PID TCP_PORT WS_PORT [N]
  e.g. martletd --port 18900 --ws-port 18901 & python3 Benchmarks/ws-idle.py $! 18900 18901 3000
Run against a fresh broker (freed memory is not given back), and `ulimit -n` above 2 N.
"""
import base64, os, socket, sys, time

pid, tcp_port, ws_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
n = int(sys.argv[4]) if len(sys.argv) > 4 else 3000


def rss_kib():
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def connect_packet(cid):
    cid = cid.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return bytes([0x10, len(var)]) + var


def frame(payload):
    mask = os.urandom(4)
    return bytes([0x82, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def open_all(port, ws, prefix):
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        if ws:
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall(("GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n" % key).encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(1)
            s.sendall(frame(connect_packet("%s%d" % (prefix, i))))
        else:
            s.sendall(connect_packet("%s%d" % (prefix, i)))
        s.recv(16)
        socks.append(s)
    return socks


for name, port, ws in [("tcp", tcp_port, False), ("websocket", ws_port, True)]:
    before = rss_kib()
    socks = open_all(port, ws, name)
    time.sleep(2)
    after = rss_kib()
    print("%s: %d bytes per idle connection (%d connections, RSS %d -> %d KiB)" % (name, (after - before) * 1024 // n, n, before, after))
    for s in socks:
        s.close()
    time.sleep(2)
