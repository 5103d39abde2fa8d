#!/bin/bash
# pier's demo: two containers (network namespaces) joined by pier through tap ports; ping and
# iperf3 in both directions; everything removed afterwards. Run as root: scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces and taps)" >&2; exit 1; }
scripts/setup.sh
work=$(mktemp -d /tmp/pier-demo.XXXXXX)
export PIER_SOCKET=$work/pier.sock
pier=bin/pier
daemon=
cleanup() {
  set +e
  [ -n "$daemon" ] && $pier del-br br0 >/dev/null 2>&1
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  ip netns del pier-demo-c1 2>/dev/null; ip netns del pier-demo-c2 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

ip netns add pier-demo-c1; ip netns add pier-demo-c2
$pier daemon --state-dir "$work/state" >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do grep -q 'daemon ready' "$work/daemon.log" 2>/dev/null && break; sleep 0.1; done
grep -q 'daemon ready' "$work/daemon.log" || { cat "$work/daemon.log" >&2; exit 1; }

step $pier add-br br0
step $pier add-port br0 c1 type=tap netns=pier-demo-c1 ip=10.0.0.1/24 ifname=eth0 mtu=9000
step $pier add-port br0 c2 type=tap netns=pier-demo-c2 ip=10.0.0.2/24 ifname=eth0 mtu=9000
step $pier show
step ip -n pier-demo-c1 addr show dev eth0
step ip netns exec pier-demo-c1 ping -c 3 -i 0.2 10.0.0.2
step ip netns exec pier-demo-c2 ping -c 3 -i 0.2 -M do -s 8900 10.0.0.1

iperf() { # $1: extra iperf3 flag
  ip netns exec pier-demo-c2 iperf3 -s -1 >/dev/null 2>&1 &
  local srv=$!; sleep 0.5
  ip netns exec pier-demo-c1 iperf3 -c 10.0.0.2 -t 3 $1 -J | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]; print("%.2f Gbit/s, %s retransmits" % (e["sum_received"]["bits_per_second"]/1e9, e["sum_sent"].get("retransmits")))'
  wait $srv 2>/dev/null || true
}
printf '\n\033[1mTCP throughput through pier (iperf3, 3 s each)\033[0m\n'
echo "c1 -> c2: $(iperf '')"
echo "c2 -> c1: $(iperf -R)"
step $pier stats
printf '\nDemo done; cleaning up.\n'
