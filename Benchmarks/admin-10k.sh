#!/bin/bash
# The admin API and dashboard with 10,000 connected clients (issue 20): API response times
# (curl), martletd CPU idle and with the dashboard open in headless Chromium (1 s refresh), and
# the page load time to the first client page. Needs chromium and node with node-ws (make deps) and curl.
#   bash Benchmarks/admin-10k.sh
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
swift build -c release --product martletd >&2
swift build -c release --product martlet >&2
BIN=$(swift build -c release --show-bin-path)
W=$(mktemp -d)
echo "measure-token-0123456789" > $W/tokens
cat > $W/m.yaml <<Y
listeners: [{host: 127.0.0.1, port: 18891}]
metrics: {host: 127.0.0.1, port: 18892}
admin_token_file: $W/tokens
log_level: error
sys_interval_s: 0
Y
ulimit -n 20000
$BIN/martletd --config $W/m.yaml & P=$!; sleep 1
$BIN/martlet bench idle -n 10000 -p 18891 --duration 90 > $W/idle.out 2>&1 & B=$!
sleep 20
H="Authorization: Bearer measure-token-0123456789"
for path in "/api/v1/clients?sort=queued&limit=50" "/api/v1/clients?sort=id&limit=50&offset=5000" "/api/v1/stats" "/api/v1/sessions?limit=50"; do
  for i in 1 2 3; do curl -s -o /dev/null -w "$path %{time_total}s %{size_download}B\n" -H "$H" "127.0.0.1:18892$path"; done
done
c0=$(awk '{print $14+$15}' /proc/$P/stat); sleep 20; c1=$(awk '{print $14+$15}' /proc/$P/stat)
echo "idle cpu: $(( (c1-c0) )) ticks in 20 s"
/usr/lib/chromium/chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-dev-shm-usage --user-data-dir=$W/prof --remote-debugging-port=19333 about:blank > /dev/null 2>&1 & C=$!
c0=$(awk '{print $14+$15}' /proc/$P/stat)
NODE_PATH=/usr/share/nodejs node "$ROOT/Benchmarks/admin-10k.js" 19333 "http://127.0.0.1:18892/#token=measure-token-0123456789"
c1=$(awk '{print $14+$15}' /proc/$P/stat)
echo "dashboard open cpu: $(( (c1-c0) )) ticks (clock ticks of 10 ms) over load + 20 s"
kill $C $B $P 2>/dev/null; wait 2>/dev/null
