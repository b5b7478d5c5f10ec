#!/usr/bin/python3
"""Idle memory per connection, plain TCP or WebSocket: opens N MQTT connections (each
CONNECT answered), holds them, and prints the broker's RSS growth per connection. Use a fresh
broker for each kind (freed memory is not given back to the system), `ulimit -n` above N:

  martletd --port 18900 & python3 Benchmarks/ws-idle.py $! 18900 tcp 3000; kill $!
  martletd --ws-port 18901 & python3 Benchmarks/ws-idle.py $! 18901 ws 3000; kill $!
"""
import base64, os, socket, sys, time

pid, port, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
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


before = rss_kib()
socks = open_all(port, kind == "ws", kind)
time.sleep(2)
after = rss_kib()
print("%s: %d bytes per idle connection (%d connections, RSS %d -> %d KiB)" % (kind, (after - before) * 1024 // n, n, before, after))
