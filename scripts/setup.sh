#!/bin/bash
# Install what pier, its demo and its tests need on a fresh Debian 12 machine. Idempotent: a
# second run installs nothing. Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pair in iperf3:iperf3 ping:iputils-ping ip:iproute2 nsenter:util-linux setpriv:util-linux unshare:util-linux dpdk-testpmd:dpdk-dev stdbuf:coreutils qemu-system-x86_64:qemu-system-x86 depmod:kmod xz:xz-utils mkfifo:coreutils containerd:containerd ctr:containerd runc:runc /usr/lib/cni/host-local:containernetworking-plugins nft:nftables busybox:busybox-static shellcheck:shellcheck tshark:tshark capinfos:wireshark-common tcpdump:tcpdump /usr/bin/python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -d node_modules/koffi ] || [ ! -d node_modules/tsx ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
# The build: bin/pier runs dist/, compiled from src/ (tests excepted) by `npm run build`; rebuilt
# when missing or older than a source file or the compiler's configuration.
if [ ! -f dist/cli/main.js ] || [ -n "$(find src tsconfig.json tsconfig.build.json package-lock.json -newer dist/cli/main.js ! -name '*.test.ts' -print -quit)" ]; then
  echo "setup: building dist/ (npm run build)" >&2
  npm run build --silent
fi
