#!/usr/bin/env bash
# pier's CNI installer: the install-cni container of the pier DaemonSet
# (deploy/kubernetes/pier.yaml) runs it beside the daemon.
#
#   install-cni.sh [install]   copy the pier tree to the host, write the pier-cni shim into the CNI
#                              bin directory, wait until the daemon answers, then write the conflist
#                              (tmp file + rename) and keep it only while the daemon answers; on
#                              SIGTERM (the pod stops) remove the conflist and exit 0
#   install-cni.sh ping        exit 0 when the daemon answers a ping on its control socket, else 1
#   install-cni.sh uninstall   remove the conflist, the shim and the tree from the host
#
# Runtimes read the conflist's presence as "the network is ready": the kubelet reports the node
# NotReady without it, and schedules no pods there. So it is there only while a daemon answers,
# and a pod never lands on a node whose pier-cni would fail for want of one.
#
# Every path is the host's, prefixed with HOST_ROOT (where the host's directories are mounted in
# this container); with HOST_ROOT= the script works on this machine's own paths (the tests).
set -euo pipefail

HOST_ROOT=${HOST_ROOT-/host}
PIER_TREE=${PIER_TREE:-/opt/pier}                  # the tree in the image (deploy/build-tree.sh)
PIER_HOST_DIR=${PIER_HOST_DIR:-/opt/pier}          # where the host keeps it: trees/ID, current -> trees/ID
CNI_BIN_DIR=${CNI_BIN_DIR:-/opt/cni/bin}
CNI_NET_DIR=${CNI_NET_DIR:-/etc/cni/net.d}
PIER_CNI_CONFLIST=${PIER_CNI_CONFLIST-/etc/pier-cni/10-pier.conflist}   # in this container (ConfigMap); empty: write none
PIER_SOCKET=${PIER_SOCKET:-/run/pier/pier.sock}
PIER_PING_INTERVAL=${PIER_PING_INTERVAL:-5}        # seconds between pings once the conflist is written
PIER_PING_FAILURES=${PIER_PING_FAILURES:-3}        # pings in a row unanswered that take the conflist away
PIER_WAIT_INTERVAL=${PIER_WAIT_INTERVAL:-1}        # seconds between pings while waiting for the daemon
PIER_PING_TIMEOUT_MS=${PIER_PING_TIMEOUT_MS:-3000}
NODE=${NODE:-node}

log() { echo "install-cni: $*" >&2; }
die() { log "error: $*"; exit 1; }

# Paths go into the shim unquoted by any shell: keep them to characters that need no quoting.
for p in "$PIER_HOST_DIR" "$CNI_BIN_DIR" "$CNI_NET_DIR"; do
  [[ $p =~ ^/[A-Za-z0-9/._+-]*$ ]] || die "$p is not an absolute path of letters, digits and / . _ + -"
done

tree_dir=$HOST_ROOT$PIER_HOST_DIR
bin_dir=$HOST_ROOT$CNI_BIN_DIR
net_dir=$HOST_ROOT$CNI_NET_DIR
conflist_name=$(basename "${PIER_CNI_CONFLIST:-none}")
conflist=$net_dir/$conflist_name

# One request line, one reply line (the control socket's protocol, docs/design/architecture.md).
# exec: run in the background, the child to stop on SIGTERM is node itself.
ping_daemon() {
  exec "$NODE" -e '
const [socket, ms] = process.argv.slice(1);
const s = require("node:net").createConnection(socket);
setTimeout(() => process.exit(1), Number(ms)).unref();
let buf = "";
s.setEncoding("utf8");
s.on("connect", () => s.write(JSON.stringify({ cmd: "ping", args: [] }) + "\n"));
s.on("data", (d) => {
  buf += d;
  const nl = buf.indexOf("\n");
  if (nl < 0) return;
  let ok = false;
  try { ok = JSON.parse(buf.slice(0, nl)).ok === true; } catch { ok = false; }
  process.exit(ok ? 0 : 1);
});
s.on("error", () => process.exit(1));
s.on("close", () => process.exit(1));
' "$PIER_SOCKET" "$PIER_PING_TIMEOUT_MS"
}

# Children run in the background so that SIGTERM is handled at once, not after them.
child=
run_child() {
  "$@" &
  child=$!
  local rc=0
  wait "$child" || rc=$?
  child=
  return "$rc"
}
pause() { run_child sleep "$1" || true; }

install_tree() {
  local id trees tmp prev t
  [ -f "$PIER_TREE/.tree-id" ] || die "$PIER_TREE/.tree-id is missing: $PIER_TREE is not a tree made by build-tree.sh"
  id=$(cat "$PIER_TREE/.tree-id")
  trees=$tree_dir/trees
  mkdir -p "$trees"
  rm -rf "$trees"/.tmp.*   # a copy cut short by an earlier pod
  if [ -d "$trees/$id" ]; then
    log "tree $id is already in $PIER_HOST_DIR/trees"
  else
    log "copying tree $id to $PIER_HOST_DIR/trees"
    tmp=$(mktemp -d "$trees/.tmp.XXXXXX")
    # node/ and lib/ are symlinks into the image's system: the host gets what they point to.
    cp -RL "$PIER_TREE/node" "$PIER_TREE/lib" "$tmp/"
    for part in dist bin node_modules package.json .tree-id; do
      if [ -e "$PIER_TREE/$part" ]; then cp -R "$PIER_TREE/$part" "$tmp/"; fi
    done
    chmod 755 "$tmp"
    mv -T "$tmp" "$trees/$id"
  fi
  # The switch is one rename: a pier-cni starting now runs either tree whole.
  prev=$(readlink "$tree_dir/current" || true)
  ln -sfn "trees/$id" "$tree_dir/.current.tmp"
  mv -Tf "$tree_dir/.current.tmp" "$tree_dir/current"
  # Keep the previous tree (a pier-cni may still be running from it), remove older ones.
  for t in "$trees"/*; do
    [ -d "$t" ] || continue
    case "trees/$(basename "$t")" in "trees/$id" | "$prev") ;; *) log "removing old tree $(basename "$t")"; rm -rf "$t" ;; esac
  done
}

install_shim() {
  local tmp
  mkdir -p "$bin_dir"
  tmp=$(mktemp "$bin_dir/.pier-cni.tmp.XXXXXX")
  # printf, not a here-document: bash may put one in a temporary file, and / is read-only here.
  # The single-quoted lines are the shim's own shell code, expanded when it runs (SC2016).
  # shellcheck disable=SC2016
  printf '%s\n' \
    '#!/bin/sh' \
    "# pier-cni, written by pier's install-cni.sh: the CNI plugin runs from the tree in" \
    "# $PIER_HOST_DIR/current with the node binary and the C library that the tree carries, started" \
    "# through the tree's own loader (the host's libc is not used; see deploy/build-tree.sh)." \
    "t=$PIER_HOST_DIR/current" \
    'if [ -e "$t/lib/ld.so" ]; then' \
    '  exec "$t/lib/ld.so" --inhibit-cache --library-path "$t/lib" "$t/node/bin/node" "$t/dist/cni/main.cjs" "$@"' \
    'fi' \
    'exec "$t/node/bin/node" "$t/dist/cni/main.cjs" "$@"' > "$tmp"
  chmod 755 "$tmp"
  mv -f "$tmp" "$bin_dir/pier-cni"
  log "wrote $CNI_BIN_DIR/pier-cni"
}

# The conflist must be JSON and name pier-cni; the plugins it chains and the IPAM plugins it
# names must be in the CNI bin directory (host-local is not installed by pier: warn).
check_conflist() {
  local types t
  types=$("$NODE" -e '
const c = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"));
const plugins = Array.isArray(c.plugins) ? c.plugins : [c];
if (!plugins.some((p) => p && p.type === "pier-cni")) { console.error("no plugin in it has type pier-cni"); process.exit(1); }
for (const p of plugins) {
  if (p && typeof p.type === "string") console.log(p.type);
  if (p && p.ipam && typeof p.ipam.type === "string") console.log(p.ipam.type);
}
' "$PIER_CNI_CONFLIST" 2>&1) || die "$PIER_CNI_CONFLIST is not a conflist for pier-cni: ${types##*$'\n'}"
  for t in $types; do
    [ -x "$bin_dir/$t" ] || log "warning: $CNI_BIN_DIR/$t is missing: the conflist names it (install the CNI plugins package on the node)"
  done
}

written=false
write_conflist() {
  local tmp
  mkdir -p "$net_dir"
  # Not *.conf, *.conflist or *.json: runtimes skip it while it is being written.
  tmp=$(mktemp "$net_dir/.$conflist_name.tmp.XXXXXX")
  cat "$PIER_CNI_CONFLIST" > "$tmp"
  chmod 644 "$tmp"
  written=true   # before the rename: a SIGTERM handled right after it must remove the file
  mv -f "$tmp" "$conflist"
}

remove_conflist() {
  rm -f "$conflist" "$net_dir/.$conflist_name".tmp.*
  written=false
}

cleanup() {
  local rc=$?
  if [ -n "$child" ]; then kill "$child" 2>/dev/null || true; fi
  if $written; then
    remove_conflist
    log "removed $CNI_NET_DIR/$conflist_name"
  fi
  exit "$rc"
}

install() {
  trap cleanup EXIT
  trap 'log "stopping"; exit 0' TERM INT
  install_tree
  install_shim
  if [ -z "$PIER_CNI_CONFLIST" ]; then
    log "PIER_CNI_CONFLIST is empty: no conflist is written (pier-cni serves networks configured elsewhere, such as Multus attachments)"
    while true; do pause 3600; done
  fi
  check_conflist
  while true; do
    log "waiting for the pier daemon at $PIER_SOCKET"
    until run_child ping_daemon; do pause "$PIER_WAIT_INTERVAL"; done
    write_conflist
    log "the daemon answers: wrote $CNI_NET_DIR/$conflist_name"
    local misses=0
    while [ "$misses" -lt "$PIER_PING_FAILURES" ]; do
      pause "$PIER_PING_INTERVAL"
      if run_child ping_daemon; then
        misses=0
        # A changed ConfigMap (or a file someone removed) is written again.
        if ! cmp -s "$PIER_CNI_CONFLIST" "$conflist"; then
          write_conflist
          log "rewrote $CNI_NET_DIR/$conflist_name"
        fi
      else
        misses=$((misses + 1))
      fi
    done
    remove_conflist
    log "the daemon did not answer $PIER_PING_FAILURES pings in a row: removed $CNI_NET_DIR/$conflist_name"
  done
}

uninstall() {
  remove_conflist
  rm -f "$bin_dir/pier-cni"
  rm -rf "$tree_dir/trees" "$tree_dir/current"
  rmdir "$tree_dir" 2>/dev/null || true
  log "removed $CNI_NET_DIR/$conflist_name, $CNI_BIN_DIR/pier-cni and $PIER_HOST_DIR"
}

case ${1:-install} in
  install) install ;;
  ping) ping_daemon ;;
  uninstall) uninstall ;;
  *) die "usage: install-cni.sh [install|ping|uninstall]" ;;
esac
