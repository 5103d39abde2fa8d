#!/bin/bash
# pier as the switch of ../shared/bench/vhost-loop.sh: one bridge, two vhost-user server ports at
# $1 and $2, in a private daemon (own socket and state) that runs until this script is signalled.
# usage: bench/pier-loop-switch.sh A.sock B.sock   (extra port options in PIER_PORT_OPTS)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/pier-loop.XXXXXX)
export PIER_SOCKET=$work/pier.sock
# The harness's VM polls on CPU 1 (its main lcore, CPU 0, mostly sleeps): keep pier off CPU 1.
"$here/bin/pier" daemon --state-dir "$work/state" --pool "${PIER_POOL:-4096}" --dataplane-cpu "${PIER_CPU:-0}" >"$work/daemon.log" 2>&1 &
daemon=$!
cleanup() { kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 0' TERM INT
for _ in $(seq 100); do grep -q 'daemon ready' "$work/daemon.log" 2>/dev/null && break; sleep 0.1; done
"$here/bin/pier" add-br br0
# B first: the harness starts its "VM" once B's socket exists.
"$here/bin/pier" add-port br0 a type=vhost-user path="$1" ${PIER_PORT_OPTS:-}
"$here/bin/pier" add-port br0 b type=vhost-user path="$2" ${PIER_PORT_OPTS:-}
# For the benchmark: where the daemon and its dataplane thread are, to read their CPU time.
[ -n "${PIER_INFO_OUT:-}" ] && "$here/bin/pier" show --json > "$PIER_INFO_OUT.tmp" && echo "$PIER_SOCKET" > "$PIER_INFO_OUT.sock" && mv "$PIER_INFO_OUT.tmp" "$PIER_INFO_OUT"
while kill -0 "$daemon" 2>/dev/null; do sleep 0.2; done
