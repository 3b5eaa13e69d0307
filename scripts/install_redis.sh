#!/usr/bin/env bash
# Make sure redis-server is installed (the tests start their own on a loopback port;
# STORE_BACKEND=redis needs a Redis somewhere): as root, install Debian's redis-server
# quietly with apt-get; as anyone else, print the command to run. Exit 0 when
# redis-server is there afterwards, 1 when it is not. Used by scripts/test.sh.
set -euo pipefail

find_redis() {
  command -v redis-server 2>/dev/null || { [ -x /usr/bin/redis-server ] && echo /usr/bin/redis-server; } || return 1
}

if find_redis >/dev/null; then
  exit 0
fi
cmd="apt-get update && apt-get install -y redis-server"
if [ "$(id -u)" != 0 ]; then
  echo "未安装 redis-server / redis-server is not installed. Install it with:  sudo sh -c '$cmd'" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "未安装 redis-server，且本机没有 apt-get / redis-server is missing and apt-get is not available: install it with your package manager" >&2
  exit 1
fi
echo "==> installing redis-server (apt-get install redis-server)"
log="$(mktemp)"
export DEBIAN_FRONTEND=noninteractive
if { apt-get install -y -qq --no-install-recommends redis-server \
     || { apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server; }; } >"$log" 2>&1; then
  rm -f "$log"
else
  cat "$log" >&2
  rm -f "$log"
  echo "redis-server 安装失败 / installing redis-server failed; run:  $cmd" >&2
  exit 1
fi
# With an init system the package starts the distribution's Redis on port 6379. The
# tests never use it (they start their own); leave it to the operator.
find_redis >/dev/null
