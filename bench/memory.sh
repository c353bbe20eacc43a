#!/usr/bin/env bash
# Peak memory of a large transfer through the real `ferry` binaries (release build).
#
#   bench/memory.sh [SIZE_MIB]      (default 1024)
#
# Starts a server on a loopback port in a temporary folder, puts a SIZE_MIB file of random
# bytes, gets it back to /dev/null (ferry get checks BLAKE3 end to end and fails on a
# mismatch, which stops this script), and prints the peak resident memory of
# the server (VmHWM from /proc) and of each client process (GNU time's maximum RSS).
set -euo pipefail
size_mib=${1:-1024}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p ferry-cli --manifest-path "$root/Cargo.toml"
ferry="$root/target/release/ferry"
[ -x /usr/bin/time ] || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }

work=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$ferry" init --dir "$work/srv" >/dev/null 2>&1
FERRY_LOG=warn,ferry::serve=info "$ferry" serve --dir "$work/srv" --listen 127.0.0.1:0 2>"$work/serve.log" &
server_pid=$!
for _ in $(seq 50); do grep -q 'listening on' "$work/serve.log" && break; sleep 0.1; done
addr=$(grep -o 'listening on [0-9.:]*' "$work/serve.log" | awk '{print $3}')
"$ferry" client issue w --role writer --dir "$work/srv" --server "$addr" --out "$work/w.cred" 2>/dev/null

head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/data"
/usr/bin/time -f '%M %e' -o "$work/put.time" "$ferry" put bench/data "$work/data" --cred "$work/w.cred" >/dev/null
/usr/bin/time -f '%M %e' -o "$work/get.time" sh -c "\"$ferry\" get bench/data --cred \"$work/w.cred\" > /dev/null"
stored=$("$ferry" stat bench/data --cred "$work/w.cred" --json | sed -n 's/.*"hash": *"\([0-9a-f]*\)".*/\1/p')
server_kib=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
read -r put_kib put_s < "$work/put.time"
read -r get_kib get_s < "$work/get.time"

echo "transfer: ${size_mib} MiB over loopback TLS, blake3 ${stored:0:16}…"
printf '%-28s %8s\n' "process" "peak RSS"
printf '%-28s %6d MiB\n' "server (put then get)" $((server_kib / 1024))
printf '%-28s %6d MiB  (%s s)\n' "client: ferry put FILE" $((put_kib / 1024)) "$put_s"
printf '%-28s %6d MiB  (%s s)\n' "client: ferry get > /dev/null" $((get_kib / 1024)) "$get_s"
