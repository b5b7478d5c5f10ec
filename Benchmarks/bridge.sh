#!/usr/bin/env bash
# make bench (third part): one bridge link. A publisher on the first broker, a subscriber on
# the second, the first bridging `#` out to the second: throughput (as fast as the link goes)
# and latency at a fixed rate, QoS 0 and QoS 1, for
#   martletd  → martletd      (our bridge, MQTT 5)
#   martletd  → mosquitto     (our bridge, MQTT 5)
#   mosquitto → mosquitto     (mosquitto's own bridge, `topic # out 1`)
# next to each broker alone (publisher and subscriber on one broker: the hop's baseline).
# Medians of RUNS runs; the table goes to stdout and is appended to BENCHMARKS.md (OUT).
#
#   bash Benchmarks/bridge.sh            # RUNS=3 DURATION=5
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
RATE=${RATE:-2000}
OUT=${OUT:-$ROOT/BENCHMARKS.md}
WORK=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$WORK"' EXIT
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
swift build -c release --product martletd >&2
swift build -c release --product martlet >&2
BIN=$(swift build -c release --show-bin-path)
A=18861
B=18862

# shellcheck source=Benchmarks/lib.sh
source "$ROOT/Benchmarks/lib.sh"

martlet() { # $1 = port, $2 = bridge target port (or ""), $3 = name; prints the pid
  {
    echo "listeners: [{host: 127.0.0.1, port: $1}]"
    echo "max_queued_messages: 1000"
    echo "log_level: error"
    echo "sys_interval_s: 0"
    if [ -n "$2" ]; then
      printf 'bridges:\n  - name: hop\n    host: 127.0.0.1\n    port: %s\n    protocol: mqttv5\n' "$2"
      printf '    topics:\n      - {filter: "#", direction: out, qos: 1}\n'
    fi
  } > "$WORK/$3.yaml"
  "$BIN/martletd" --config "$WORK/$3.yaml" >/dev/null 2>"$WORK/$3.log" &
  echo $!
}

mosquitto() { # $1 = port, $2 = bridge target port (or ""), $3 = name; prints the pid
  {
    echo "allow_anonymous true"
    echo "persistence false"
    echo "max_queued_messages 1000"
    echo "log_dest none"
    echo "set_tcp_nodelay true"
    [ "$(id -u)" = 0 ] && echo "user root"
    echo "listener $1 127.0.0.1"
    if [ -n "$2" ]; then
      printf 'connection hop\naddress 127.0.0.1:%s\ntopic # out 1\nbridge_protocol_version mqttv50\ncleansession true\n' "$2"
    fi
  } > "$WORK/$3.conf"
  "$MOSQUITTO" -c "$WORK/$3.conf" >/dev/null 2>&1 &
  echo $!
}

# path | first broker | second broker (empty: publisher and subscriber on the first)
PATHS=(
  "martletd alone|martlet|"
  "martletd → martletd|martlet|martlet"
  "martletd → mosquitto|martlet|mosquitto"
  "mosquitto alone|mosquitto|"
  "mosquitto → mosquitto (its bridge)|mosquitto|mosquitto"
)
i=0
for path in "${PATHS[@]}"; do
  IFS='|' read -r name first second <<< "$path"
  for qos in 0 1; do
    for kind in throughput latency; do
      for run in $(seq 1 "$RUNS"); do
        pids=()
        sub=$A
        if [ -n "$second" ]; then
          pids+=("$($second $B "" second)"); wait_port $B
          pids+=("$($first $A $B first)"); wait_port $A
          sub=$B
          sleep 1  # the bridge connects
        else
          pids+=("$($first $A "" first)"); wait_port $A
        fi
        args="pairs -n 1 -q $qos"
        [ "$kind" = latency ] && args="$args --rate $RATE"
        echo "bench: $name, QoS $qos, $kind (run $run)" >&2
        # shellcheck disable=SC2086
        "$BIN/martlet" bench $args -p $A --sub-port $sub -V mqttv5 --duration "$DURATION" --json \
          > "$WORK/$i.$qos.$kind.$run.json" 2>/dev/null || echo "bench: $name QoS $qos $kind run $run reported errors" >&2
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
        sleep 0.3
      done
    done
  done
  i=$((i + 1))
done

PYTHONPATH="$(dirname "$0")" python3 - "$WORK" "$RUNS" "$DURATION" "$RATE" "$OUT" "${PATHS[@]}" <<'PY'
import sys
from summary import load_runs, med
work, runs, duration, rate, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
paths = [p.split("|")[0] for p in sys.argv[6:]]
def load(i, qos, kind):
    return load_runs(lambda run: f"{work}/{i}.{qos}.{kind}.{run}.json", runs)
lines = [f"| path | QoS | msg/s through the link | lost | p50 at {int(rate):,}/s | p99 at {int(rate):,}/s |",
         "| --- | --- | --- | --- | --- | --- |"]
for i, name in enumerate(paths):
    for qos in (0, 1):
        t, l = load(i, qos, "throughput"), load(i, qos, "latency")
        v = med(t, "delivered_per_s")
        lost = (med(t, "lost") or 0) + (med(l, "lost") or 0)
        p50, p99 = med(l, "latency_p50_us"), med(l, "latency_p99_us")
        lines.append(f"| {name} | {qos} | {v or 0:,.0f} | {lost:,.0f} | {p50 or 0:,.0f} µs | {p99 or 0:,.0f} µs |")
table = "\n".join(lines)
print(table)
with open(out, "a") as f:
    f.write(f"""
## One bridge link

Made by Benchmarks/bridge.sh (`make bench`): RUNS={runs}, DURATION={duration} s, medians.
`martlet bench pairs -n 1 -q Q -V mqttv5 -p FIRST --sub-port SECOND`: the publisher on the
first broker, the subscriber on the second, the first bridging `#` out at QoS 1 (martletd:
`bridges:`; mosquitto: `connection` / `topic # out 1`); "alone" rows put both on one broker,
the baseline the hop adds to. Latency rows pace the publisher at {int(rate):,} msg/s.

{table}
""")
PY
