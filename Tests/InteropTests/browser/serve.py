#!/usr/bin/python3
"""Serves the browser test page and the MQTT.js bundle on 127.0.0.1:PORT, waits for the page
to POST its result to /result, prints it and exits (or prints "no result" after TIMEOUT s).

usage: serve.py PORT PAGE BUNDLE [TIMEOUT]
"""
import http.server, sys, threading

port, page, bundle = int(sys.argv[1]), sys.argv[2], sys.argv[3]
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 30
result = []
done = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        files = {"/": (page, "text/html"), "/mqtt.browser.js": (bundle, "application/javascript")}
        if path not in files:
            self.send_error(404)
            return
        name, kind = files[path]
        with open(name, "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        self.send_response(204)
        self.end_headers()
        if self.path == "/result" and not result:
            result.append(body)
            done.set()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(result[0] if done.wait(timeout) else "no result", flush=True)
server.shutdown()
