#!/usr/bin/env bash
# Make pier's self-contained tree, the one install-cni.sh copies to a node for pier-cni. DIR holds
# pier as npm installs it (dist/, bin/, node_modules/ with the production dependencies,
# package.json); this adds:
#
#   DIR/node/bin/node   the node binary                  (a symlink to NODE)
#   DIR/lib/            the loader and the shared libraries that node and every native addon
#                       under node_modules need, as ldd finds them here (symlinks), and lib/ld.so,
#                       a link to the loader
#   DIR/.tree-id        VERSION-HASH of the content: what install-cni.sh names the host's copy
#
# Why the tree carries its C library: pier-cni runs on the host, outside any container, where
# the C library may be older than the one node was built against, or another one (musl). The shim
# that install-cni.sh writes starts node through the tree's own loader
# (lib/ld.so --library-path lib node ...), so the host's libc, libstdc++ and libgcc_s are never
# used: only the kernel and /bin/sh are the host's. Programs that pier-cni starts (the IPAM
# plugin) are started as usual and use the host's libraries. The binary and the libraries are
# symlinks here, so the image holds them once; install-cni.sh copies what they point to.
#
# Usage: build-tree.sh DIR [NODE]     (NODE: the node on the PATH by default)
set -euo pipefail

die() { echo "build-tree: error: $*" >&2; exit 1; }

if [ $# -lt 1 ] || [ $# -gt 2 ]; then die "usage: build-tree.sh DIR [NODE]"; fi
dest=$(readlink -f "$1")
node=${2:-$(command -v node || true)}
[ -n "$node" ] || die "no node on the PATH; name the binary as the second argument"
node=$(readlink -f "$node")
[ -f "$dest/dist/cni/main.cjs" ] || die "$dest/dist/cni/main.cjs is missing: put pier, built (npm run build), in $dest"
if [ -e "$dest/node" ] || [ -e "$dest/lib" ] || [ -e "$dest/.tree-id" ]; then die "$dest already has node/, lib/ or .tree-id"; fi

mkdir -p "$dest/node/bin" "$dest/lib"
ln -s "$node" "$dest/node/bin/node"

# The libraries: every "name => /path" of ldd, and the loader (the line that is a bare path).
# A file ldd cannot read as this machine's kind (koffi's musl build sits beside its glibc one)
# says "not a dynamic executable" and is skipped; a library that is "not found" for a file that
# is one is an error, unless it is musl's (that addon is never loaded on a glibc system).
objects=("$node")
if [ -d "$dest/node_modules" ]; then
  while IFS= read -r -d '' f; do objects+=("$f"); done < <(find "$dest/node_modules" -name '*.node' -type f -print0)
fi
loader=
for obj in "${objects[@]}"; do
  out=$(ldd "$obj" 2>&1) || { echo "build-tree: skipping $obj: ${out##*$'\n'}" >&2; continue; }
  case $out in *"not a dynamic executable"* | *"statically linked"*) continue ;; esac
  while read -r first second third _; do
    if [ "$second" = "=>" ] && [ "$third" = "not" ]; then
      case $first in *musl*) echo "build-tree: skipping $obj (a musl build)" >&2; break ;; esac
      die "$obj needs $first, which ldd does not find"
    elif [ "$second" = "=>" ] && [ "${third:0:1}" = "/" ]; then
      lib=$third
    elif [ "${first:0:1}" = "/" ]; then
      lib=$first
      loader=$(basename "$lib")
    else
      continue
    fi
    name=$(basename "$lib")
    [ -e "$dest/lib/$name" ] || ln -s "$(readlink -f "$lib")" "$dest/lib/$name"
  done <<< "$out"
done
if [ -n "$loader" ]; then ln -s "$loader" "$dest/lib/ld.so"; fi

# The tree must start through its own loader, with koffi when it is there.
check='process.exit(0)'
if [ -d "$dest/node_modules/koffi" ]; then check="require('$dest/node_modules/koffi'); $check"; fi
if [ -n "$loader" ]; then
  "$dest/lib/ld.so" --inhibit-cache --library-path "$dest/lib" "$dest/node/bin/node" -e "$check" || die "node does not start through the tree's loader"
else
  "$dest/node/bin/node" -e "$check" || die "node does not start"
fi

version=0
if [ -f "$dest/package.json" ]; then
  version=$("$node" -p "require('$dest/package.json').version")
fi
hash=$(cd "$dest" && find -L . -type f ! -name .tree-id -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
echo "$version-$hash" > "$dest/.tree-id"
echo "build-tree: $dest ($version-$hash)" >&2
