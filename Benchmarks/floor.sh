#!/usr/bin/env bash
# The NIO floor: what one short-lived connection and one idle connection cost in a server that
# does nothing but what every MQTT broker on SwiftNIO channels must (Benchmarks/NIOFloor:
# accept, one handler, CONNACK, PUBACK, close), next to martletd and mosquitto. The same
# `martlet bench churn` and `martlet bench idle` against each, servers started side by side
# and measured in alternating rounds, so the machine's drift falls on all of them alike.
#
#   bash Benchmarks/floor.sh             # ROUNDS=5 DURATION=5 IDLE=10000
#
# Prints, per server: broker CPU per short-lived plain connection (median of the rounds) and
# RSS per idle plain connection.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
IDLE=${IDLE:-10000}
WORK=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$WORK"' EXIT
ulimit -n "$(ulimit -Hn)" || true
# shellcheck source=Benchmarks/lib.sh
source "$ROOT/Benchmarks/lib.sh"

MOSQUITTO=$(mosquitto_path)
swift build -c release --product martletd
swift build -c release --product martlet
BIN=$(swift build -c release --show-bin-path)
(cd Benchmarks/NIOFloor && swift build -c release)
FLOOR=$(cd Benchmarks/NIOFloor && swift build -c release --show-bin-path)/nio-floor

printf 'listeners:\n  - host: 127.0.0.1\n    port: 18851\nmax_queued_messages: 1000\nlog_level: error\nsys_interval_s: 0\n' > "$WORK/martlet.yaml"
printf 'listeners:\n  - host: 127.0.0.1\n    port: 18854\nmax_queued_messages: 1000\nlog_level: error\nsys_interval_s: 0\nthreads: 1\n' > "$WORK/martlet1.yaml"
{
  echo "allow_anonymous true"; echo "persistence false"; echo "max_queued_messages 1000"; echo "log_dest none"
  [ "$(id -u)" = 0 ] && echo "user root"
  echo "set_tcp_nodelay true"; echo "listener 18852 127.0.0.1"
} > "$WORK/mosquitto.conf"

# name|port|pid
SERVERS=()
start() { # name port command...
  local name=$1 port=$2; shift 2
  "$@" >/dev/null 2>&1 &
  SERVERS+=("$name|$port|$!")
  wait_port "$port"
}
start "nio-floor, 2 loops" 18850 "$FLOOR" 18850 2
start "nio-floor, 1 loop" 18853 "$FLOOR" 18853 1
start "martletd, 2 loops" 18851 "$BIN/martletd" --config "$WORK/martlet.yaml"
start "martletd, 1 loop" 18854 "$BIN/martletd" --config "$WORK/martlet1.yaml"
start "mosquitto" 18852 "$MOSQUITTO" -c "$WORK/mosquitto.conf"

field() { grep -oE "$1=[0-9.]+" | cut -d= -f2; }
for round in $(seq 1 "$ROUNDS"); do
  for s in "${SERVERS[@]}"; do
    IFS='|' read -r name port pid <<< "$s"
    cpu=$("$BIN/martlet" bench churn -p "$port" -c 16 --duration "$DURATION" --broker-pid "$pid" 2>/dev/null \
      | field broker_cpu_ms_per_connection || echo nan)
    echo "churn|$name|$cpu" >> "$WORK/results"
  done
  echo "round $round of $ROUNDS done" >&2
done
for s in "${SERVERS[@]}"; do
  IFS='|' read -r name port pid <<< "$s"
  rss=$("$BIN/martlet" bench idle -p "$port" -n "$IDLE" --duration 2 --broker-pid "$pid" 2>/dev/null \
    | field broker_rss_per_connection_bytes || echo nan)
  echo "idle|$name|$rss" >> "$WORK/results"
done

python3 - "$WORK/results" "$ROUNDS" "$IDLE" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    kind, name, value = line.strip().split("|")
    # A run that printed no figure (the tool failed) is left out, not counted as a value.
    try: number = float(value)
    except ValueError: continue
    if number == number: rows[name][kind].append(number)
print(f"| server | broker CPU per short-lived plain connection (median of {sys.argv[2]}) | rounds | RSS per idle plain connection ({int(sys.argv[3]):,}) |")
print("| --- | --- | --- | --- |")
for name, kinds in rows.items():
    churn = kinds.get("churn", [])
    idle = kinds.get("idle", [])
    c = f"{statistics.median(churn):.3f} ms" if churn else "n/a"
    i = f"{idle[0]:,.0f} B" if idle else "n/a"
    print(f"| {name} | {c} | {', '.join(f'{v:.3f}' for v in churn)} | {i} |")
PY
