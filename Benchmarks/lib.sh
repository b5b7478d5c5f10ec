# Shared by the make bench scripts (sourced).

# Waits until something accepts TCP connections on 127.0.0.1:$1 (10 s at most).
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: nothing listens on $1" >&2; return 1
}

# Prints the path of Debian's mosquitto, installing it first when it is missing and we are root.
mosquitto_path() {
  if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    if [ "$(id -u)" = 0 ]; then
      { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto; } >&2
    else
      echo "bench: install mosquitto (apt-get install mosquitto)" >&2; return 1
    fi
  fi
  command -v mosquitto || echo /usr/sbin/mosquitto
}
