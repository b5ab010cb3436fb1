#!/usr/bin/env bash
# Install Debian's rabbitmq-server for tox -e live, when it is missing.
#
# The live tests start their own broker as a plain process on a free
# 127.0.0.1 port (cinder_chunked_ext/tests/live/cluster.py); they only
# need the package's programs.  The package's maintainer scripts must not
# start a system broker (it would listen on every address): a
# policy-rc.d that refuses is in place for the install, unless the
# machine has one.  Needs root (apt-get); does nothing when installed.
set -euo pipefail

if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_rabbitmq: rabbitmq-server is missing; install it as root" \
         "(apt-get install rabbitmq-server) or run this script as root" >&2
    exit 1
fi
echo "install_rabbitmq: installing rabbitmq-server with apt-get"
policy=/usr/sbin/policy-rc.d
created=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    created=1
fi
rc=0
apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends rabbitmq-server >/dev/null || rc=$?
if [ -n "$created" ]; then
    rm -f "$policy"
fi
if [ "$rc" -ne 0 ]; then
    echo "install_rabbitmq: apt-get install rabbitmq-server failed ($rc)" >&2
fi
exit "$rc"
