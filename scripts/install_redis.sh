#!/usr/bin/env bash
# Make sure redis-server is installed (the tests start their own on a loopback port;
# STORE_BACKEND=redis needs a Redis somewhere); see install_debian_package.sh.
# With an init system the package also starts the distribution's Redis on port 6379;
# the tests never use it, so it is left to the operator. Used by scripts/test.sh.
set -euo pipefail
exec bash "$(dirname "$0")/install_debian_package.sh" redis-server redis-server
