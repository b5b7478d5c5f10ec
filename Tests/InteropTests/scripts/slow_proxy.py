"""A TCP proxy on 127.0.0.1 whose client-to-server direction is throttled: a remote broker
that takes what it is sent more slowly than a local publisher produces it.

    slow_proxy.py LISTEN_PORT TARGET_PORT BYTES_PER_SECOND

Prints "ready" once listening; serves connections until killed.
"""
import socket
import sys
import threading
import time

listen_port, target_port, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


def pump(source, sink, limit):
    chunk = 512 if limit else 65536
    try:
        while True:
            data = source.recv(chunk)
            if not data:
                break
            sink.sendall(data)
            if limit:
                time.sleep(len(data) / limit)
    except OSError:
        pass
    for s in (source, sink):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen_port))
server.listen(16)
print("ready", flush=True)
while True:
    client, _ = server.accept()
    upstream = socket.create_connection(("127.0.0.1", target_port))
    # Small kernel buffers, so the throttle is felt at once rather than after megabytes.
    for s in (client, upstream):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    threading.Thread(target=pump, args=(client, upstream, rate), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client, 0), daemon=True).start()
