#!/usr/bin/env bash
# Make sure a command from a Debian package is installed:
#   scripts/install_debian_package.sh COMMAND PACKAGE [FALLBACK_PACKAGE...]
# As root, install the first package that installs, quietly, with apt-get (updating the
# package lists first if needed); as anyone else, print the command to run. Exit 0 when
# COMMAND is there afterwards, 1 when it is not. Used by install_nginx.sh / install_redis.sh.
set -euo pipefail
command_name="$1"; shift
packages=("$@")

find_command() {
  # /usr/sbin is not on a normal user's PATH on Debian.
  command -v "$command_name" 2>/dev/null \
    || { [ -x "/usr/sbin/$command_name" ] && echo "/usr/sbin/$command_name"; } || return 1
}

if find_command >/dev/null; then
  exit 0
fi
cmd="apt-get update && apt-get install -y ${packages[0]}"
if [ "$(id -u)" != 0 ]; then
  echo "未安装 $command_name / $command_name is not installed. Install it with:  sudo sh -c '$cmd'" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "未安装 $command_name，且本机没有 apt-get / $command_name is missing and apt-get is not available: install it with your package manager" >&2
  exit 1
fi
echo "==> installing $command_name (apt-get install ${packages[0]})"
export DEBIAN_FRONTEND=noninteractive
install_any() {
  for package in "${packages[@]}"; do
    apt-get install -y -qq --no-install-recommends "$package" && return 0
  done
  return 1
}
log="$(mktemp)"
if { install_any || { apt-get update -qq && install_any; }; } >"$log" 2>&1; then
  rm -f "$log"
else
  cat "$log" >&2
  rm -f "$log"
  echo "$command_name 安装失败 / installing $command_name failed; run:  $cmd" >&2
  exit 1
fi
find_command >/dev/null
