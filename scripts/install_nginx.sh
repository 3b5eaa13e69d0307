#!/usr/bin/env bash
# Make sure Nginx is installed (Debian's nginx-light, else nginx); see
# install_debian_package.sh. Used by scripts/test.sh and scripts/fleet.sh.
set -euo pipefail
here="$(dirname "$0")"
bash "$here/install_debian_package.sh" nginx nginx-light nginx
# On a machine with an init system the package starts the distribution's own nginx on
# port 80. We run ours from the project folder, so stop the one this install started.
if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
  "$(command -v nginx || echo /usr/sbin/nginx)" -s quit 2>/dev/null || true
fi
