#!/usr/bin/env bash
# Make sure Nginx is installed: as root, install Debian's nginx-light quietly with
# apt-get; as anyone else, print the command to run. Exit 0 when nginx is there
# afterwards, 1 when it is not. Used by scripts/test.sh and scripts/fleet.sh.
set -euo pipefail

find_nginx() {
  # /usr/sbin is not on a normal user's PATH on Debian.
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || return 1
}

if find_nginx >/dev/null; then
  exit 0
fi
cmd="apt-get update && apt-get install -y nginx-light"
if [ "$(id -u)" != 0 ]; then
  echo "未安装 Nginx / Nginx is not installed. Install it with:  sudo sh -c '$cmd'" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "未安装 Nginx，且本机没有 apt-get / Nginx is missing and apt-get is not available: install nginx with your package manager" >&2
  exit 1
fi
echo "==> installing Nginx (apt-get install nginx-light)"
log="$(mktemp)"
export DEBIAN_FRONTEND=noninteractive
if { apt-get update -qq \
     && { apt-get install -y -qq --no-install-recommends nginx-light \
          || apt-get install -y -qq --no-install-recommends nginx; }; } >"$log" 2>&1; then
  rm -f "$log"
else
  cat "$log" >&2
  rm -f "$log"
  echo "Nginx 安装失败 / installing Nginx failed; run:  $cmd" >&2
  exit 1
fi
# On a machine with an init system the package starts the distribution's own nginx on
# port 80. We run ours from the project folder, so stop the one this install started.
if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
  "$(find_nginx)" -s quit 2>/dev/null || true
fi
find_nginx >/dev/null
