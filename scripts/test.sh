#!/bin/bash
# pier's test suite: type check, lint, unit tests, and the root integration tests (namespaces,
# taps, iperf3). Run as root on Debian 12: `scripts/test.sh`. Extra arguments select test files.
# Under CI=true a test whose prerequisite is missing fails instead of being skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: the integration tests create network namespaces and taps: run as root" >&2
  exit 1
fi
scripts/setup.sh
echo "== type check" >&2
npx --no-install tsc --noEmit -p .
echo "== lint" >&2
npx --no-install eslint .
if [ $# -gt 0 ]; then files=("$@"); else mapfile -t files < <(find src test -name '*.test.ts' | sort); fi
echo "== tests: ${#files[@]} files" >&2
# --test-timeout: a test that hangs fails after 10 minutes (the longest, in a VM, takes 1.5) instead
# of holding the run; --test-force-exit: a file whose tests are done ends even if a process it
# leaked still holds a pipe (CI once waited an hour on an orphaned `sleep`); scripts/blocking-stdout.mjs
# keeps that exit from losing the verdicts a file's child had not yet written to the runner.
exec node --import tsx --import ./scripts/blocking-stdout.mjs --test --test-concurrency=1 --test-timeout=600000 --test-force-exit --test-reporter=spec "${files[@]}"
