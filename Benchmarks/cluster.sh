#!/usr/bin/env bash
# make bench (fourth part): a three-node cluster over NATS JetStream (config/cluster/start.sh)
# next to one martletd alone. A publisher on node 0; one subscriber on node 1 (pairs), or ten
# spread over nodes 1 and 2 (fanout 1 → 10): throughput (as fast as it goes) and latency at a
# fixed rate, QoS 0 and QoS 1, with the CPU seconds the three martletd and the three
# nats-server processes spent. Medians of RUNS runs; the table goes to stdout and is appended
# to BENCHMARKS.md (OUT).
#
#   bash Benchmarks/cluster.sh            # RUNS=3 DURATION=5
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
RATE=${RATE:-2000}
OUT=${OUT:-$ROOT/BENCHMARKS.md}
WORK=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; sleep 0.5; rm -rf "$WORK"' EXIT
swift build -c release --product martletd >&2
swift build -c release --product martlet >&2
BIN=$(swift build -c release --show-bin-path)
SOLO=18871

# shellcheck source=Benchmarks/lib.sh
source "$ROOT/Benchmarks/lib.sh"

cpu() { # CPU ticks (user + system) of the processes $@ (the same ones before and after a run)
  local total=0
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || { echo "gone"; return; }
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

echo "listeners: [{host: 127.0.0.1, port: $SOLO}]" > "$WORK/solo.yaml"
echo "log_level: error" >> "$WORK/solo.yaml"
echo "sys_interval_s: 0" >> "$WORK/solo.yaml"

# row name | scenario | publisher port | subscriber ports
ROWS=(
  "martletd alone, pair|pairs -n 1|$SOLO|$SOLO"
  "cluster, pair node 0 → node 1|pairs -n 1|1891|1892"
  "martletd alone, fanout 1 → 10|fanout -n 10|$SOLO|$SOLO"
  "cluster, fanout node 0 → nodes 1, 2|fanout -n 10|1891|1892 1893"
)
i=0
for row in "${ROWS[@]}"; do
  IFS='|' read -r name scenario pub subs <<< "$row"
  for qos in 0 1; do
    for kind in throughput latency; do
      for run in $(seq 1 "$RUNS"); do
        if [ "$pub" = "$SOLO" ]; then
          "$BIN/martletd" --config "$WORK/solo.yaml" >/dev/null 2>&1 &
          wait_port $SOLO
        else
          rm -rf "$WORK/cluster"
          CLUSTER_DIR="$WORK/cluster" BIN="$BIN" bash config/cluster/start.sh >/dev/null 2>&1 &
          for port in 1891 1892 1893; do wait_port $port || { sleep 20; wait_port $port; }; done
        fi
        args="$scenario -q $qos -p $pub"
        for s in $subs; do args="$args --sub-port $s"; done
        [ "$kind" = latency ] && args="$args --rate $RATE"
        echo "bench: $name, QoS $qos, $kind (run $run)" >&2
        mpids=$(pgrep -x martletd | tr '\n' ' '); npids=$(pgrep -x nats-server | tr '\n' ' ')
        # shellcheck disable=SC2086
        m0=$(cpu $mpids); n0=$(cpu $npids)
        # shellcheck disable=SC2086
        "$BIN/martlet" bench $args -V mqttv5 --duration "$DURATION" --json \
          > "$WORK/$i.$qos.$kind.$run.json" 2>/dev/null || echo "bench: $name QoS $qos $kind run $run reported errors" >&2
        # shellcheck disable=SC2086
        m1=$(cpu $mpids); n1=$(cpu $npids)
        if [ "$m1" != gone ] && [ "$n1" != gone ]; then
          echo "{\"martletd_ticks\": $((m1 - m0)), \"nats_ticks\": $((n1 - n0))}" > "$WORK/$i.$qos.$kind.$run.cpu"
        else
          echo "bench: a broker process exited during $name QoS $qos $kind run $run" >&2
        fi
        pkill -P $$ martletd 2>/dev/null || true
        pkill -f "config/cluster/start.sh" 2>/dev/null || true
        pkill -x martletd 2>/dev/null || true
        pkill -x nats-server 2>/dev/null || true
        sleep 1
      done
    done
  done
  i=$((i + 1))
done

PYTHONPATH="$(dirname "$0")" python3 - "$WORK" "$RUNS" "$DURATION" "$RATE" "$OUT" "$(getconf CLK_TCK)" "${ROWS[@]}" <<'PY'
import sys
from summary import load_runs, med
work, runs, duration, rate, out, tck = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
rows = [r.split("|")[0] for r in sys.argv[7:]]
def load(i, qos, kind, ext="json"):
    return load_runs(lambda run: f"{work}/{i}.{qos}.{kind}.{run}.{ext}", runs)
lines = [f"| path | QoS | deliveries/s | lost | CPU s martletd / nats-server (throughput run) | p50 at {int(rate):,}/s | p99 at {int(rate):,}/s |",
         "| --- | --- | --- | --- | --- | --- | --- |"]
for i, name in enumerate(rows):
    for qos in (0, 1):
        t, l, c = load(i, qos, "throughput"), load(i, qos, "latency"), load(i, qos, "throughput", "cpu")
        v = med(t, "delivered_per_s")
        lost = (med(t, "lost") or 0) + (med(l, "lost") or 0)
        p50, p99 = med(l, "latency_p50_us"), med(l, "latency_p99_us")
        m, n = (med(c, "martletd_ticks") or 0) / tck, (med(c, "nats_ticks") or 0) / tck
        lines.append(f"| {name} | {qos} | {v or 0:,.0f} | {lost:,.0f} | {m:.1f} / {n:.1f} | {p50 or 0:,.0f} µs | {p99 or 0:,.0f} µs |")
table = "\n".join(lines)
print(table)
with open(out, "a") as f:
    f.write(f"""
## A three-node cluster over NATS JetStream

Made by Benchmarks/cluster.sh (`make bench`): RUNS={runs}, DURATION={duration} s, medians,
on this 2-core machine (three martletd and three nats-server processes share both cores).
`martlet bench pairs -n 1` / `fanout -n 10` `-q Q -V mqttv5 -p NODE0 --sub-port NODE1
[--sub-port NODE2]`: the publisher on node 0, the subscribers on the other nodes; "alone"
rows are one martletd without `cluster:`. QoS 1 crosses through the stream (R3): its PUBACK
waits for JetStream. CPU is of the throughput run, all martletd and all nats-server
processes. Latency rows pace the publisher at {int(rate):,} msg/s.

{table}
""")
PY
