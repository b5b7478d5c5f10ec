#!/usr/bin/env bash
# A three-node Martlet cluster on one machine: three nats-servers clustered with JetStream
# (R3) and three martletd nodes, each with `cluster:` in its config file. Runs until Ctrl-C
# (or SIGTERM), then stops all six. `make cluster` builds martletd and runs this.
#
#   MQTT:    127.0.0.1:1891, :1892, :1893 (any node serves any client)
#   metrics: 127.0.0.1:9191, :9192, :9193
#   NATS:    127.0.0.1:4222, :4223, :4224 (monitoring :8222, :8223, :8224)
#
#   bash config/cluster/start.sh                 # state in .cluster/ (kept between runs)
#   CLUSTER_DIR=/tmp/c BIN=.build/debug bash config/cluster/start.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${CLUSTER_DIR:-$(pwd)/.cluster}
BIN=${BIN:-$(swift build -c release --show-bin-path)}
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
mkdir -p "$DIR"
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT
trap 'exit 0' INT TERM

for i in 0 1 2; do
  cat > "$DIR/nats$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$((4222 + i))
http: 127.0.0.1:$((8222 + i))
jetstream { store_dir: "$DIR/js$i", max_memory_store: 256MB, max_file_store: 8GB }
cluster { name: martlet, listen: 127.0.0.1:$((6222 + i)), routes: [nats-route://127.0.0.1:6222, nats-route://127.0.0.1:6223, nats-route://127.0.0.1:6224] }
CONF
  "$NATS" -c "$DIR/nats$i.conf" >"$DIR/nats$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$((8222 + i))/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
done

for i in 0 1 2; do
  cat > "$DIR/node$i.yaml" <<CONF
listeners: [{host: 127.0.0.1, port: $((1891 + i))}]
metrics: {host: 127.0.0.1, port: $((9191 + i))}
log_level: info
cluster:
  node_id: node$i
  nats: ["nats://127.0.0.1:$((4222 + i))", "nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://127.0.0.1:4224"]
  replicas: 3
CONF
  "$BIN/martletd" --config "$DIR/node$i.yaml" >"$DIR/node$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$((1891 + i))") 2>/dev/null && break
    sleep 0.1
  done
done
echo "cluster up: MQTT on 127.0.0.1:1891, :1892, :1893; logs and state in $DIR (Ctrl-C stops it)"
wait
