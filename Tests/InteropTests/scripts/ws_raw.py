#!/usr/bin/python3
"""Raw WebSocket checks against a martletd WebSocket listener on 127.0.0.1:PORT (path /mqtt,
allowed_origins [https://good.example], max_packet_size 1024, max_http_header_bytes 2048).
The request with X-Forwarded-For comes from 127.0.0.1 (trusted_proxies in the test).
Prints one "check: result" line per check; the Swift test compares them.

usage: ws_raw.py PORT
"""
import base64, os, socket, struct, sys

port = int(sys.argv[1])
CONNECT = bytes([0x10, 0x0F, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 3]) + b"raw"
BYSTANDER = bytes([0x10, 0x0E, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 2]) + b"by"
PINGREQ = bytes([0xC0, 0])


def request(path="/mqtt", protocol="mqtt", origin=None, upgrade=True, extra="", with_key=True):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"]
        if with_key:
            lines.append("Sec-WebSocket-Key: " + key)
    if protocol:
        lines.append("Sec-WebSocket-Protocol: " + protocol)
    if origin:
        lines.append("Origin: " + origin)
    if extra:
        lines.append(extra)
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    status = head.split(b"\r\n")[0].decode() if head else "closed"
    return s, status, head.decode(errors="replace")


def frame(opcode, payload, fin=True, masked=True):
    mask = os.urandom(4) if masked else bytes(4)
    header = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        header += bytes([0x80 | n])
    elif n < 65536:
        header += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        header += bytes([0x80 | 127]) + struct.pack(">Q", n)
    if not masked:
        return header[:1] + bytes([header[1] & 0x7F]) + header[2:] + payload
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame(s):
    try:
        h = s.recv(2)
        if len(h) < 2:
            return None, b""
        n = h[1] & 0x7F
        if n == 126:
            n = struct.unpack(">H", s.recv(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", s.recv(8))[0]
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return h[0] & 0x0F, data
    except socket.timeout:
        return "timeout", b""


def mqtt_bytes(s, count):
    """Reads binary frames until `count` MQTT bytes arrived."""
    got = b""
    while len(got) < count:
        op, data = read_frame(s)
        if op != 2:
            return got + b"|op=%r" % (op,)
        got += data
    return got


# A connection that stays up while the others are refused, closed or broken.
bystander, _, _ = request()
bystander.sendall(frame(2, BYSTANDER))
mqtt_bytes(bystander, 4)

print("wrong path:", request(path="/other")[1])
print("no subprotocol:", request(protocol=None)[1])
print("bad origin:", request(origin="https://evil.example")[1])
print("plain GET:", request(upgrade=False)[1])
print("huge headers:", request(extra="X-Padding: " + "p" * 4000)[1])
print("no Sec-WebSocket-Key:", request(with_key=False)[1])
s, status, head = request(protocol="mqttv3.1, mqtt", origin="https://good.example")
print("upgrade:", status, "| protocol mqtt" if "sec-websocket-protocol: mqtt\r" in head.lower() else "| protocol missing")
# CONNECT split over two messages, then PINGREQ twice in one frame.
s.sendall(frame(2, CONNECT[:5]) + frame(2, CONNECT[5:]))
print("split CONNECT:", mqtt_bytes(s, 4).hex())
s.sendall(frame(2, PINGREQ + PINGREQ))
print("two PINGREQ in one frame:", mqtt_bytes(s, 4).hex())
# A fragmented message (binary + continuation) carrying one PINGREQ.
s.sendall(frame(2, PINGREQ[:1], fin=False) + frame(0, PINGREQ[1:]))
print("fragmented PINGREQ:", mqtt_bytes(s, 2).hex())
s.sendall(frame(9, b"hi"))
op, data = read_frame(s)
print("ping:", "pong %s" % data.decode() if op == 10 else "op=%r" % op)
s.sendall(frame(8, struct.pack(">H", 1000)))
op, data = read_frame(s)
print("close:", "close %d" % struct.unpack(">H", data[:2])[0] if op == 8 else "op=%r" % op)

s, status, _ = request(extra="X-Forwarded-For: 203.0.113.9, 10.1.2.3")
s.sendall(frame(2, CONNECT))
print("forwarded for:", mqtt_bytes(s, 4).hex())
s.close()

s, status, _ = request()
s.sendall(frame(1, b"text is not MQTT"))
op, data = read_frame(s)
print("text frame:", "close %d" % struct.unpack(">H", data[:2])[0] if op == 8 else "op=%r" % op)

s, status, _ = request()
s.sendall(frame(2, CONNECT))
mqtt_bytes(s, 4)
s.sendall(frame(2, bytes(2000)))
op, data = read_frame(s)
print("oversized frame:", "close %d" % struct.unpack(">H", data[:2])[0] if op == 8 else "op=%r" % op)

s, status, _ = request()
s.sendall(frame(2, CONNECT, masked=False))
op, data = read_frame(s)
print("unmasked frame:", "close %d" % struct.unpack(">H", data[:2])[0] if op == 8 else "op=%r" % op)

bystander.sendall(frame(2, PINGREQ))
print("bystander:", mqtt_bytes(bystander, 2).hex())
