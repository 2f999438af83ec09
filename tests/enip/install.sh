#!/bin/sh
# Installs the EtherNet/IP test peers (tests/enip/server.py: cpppo; tests/enip/client.py: pycomm3)
# into a virtualenv at DIR; run them as DIR/bin/python tests/enip/server.py ... Idempotent: does
# nothing when DIR already holds these versions. Needs python3-venv and PyPI. --no-deps: cpppo's
# declared crypto_licensing (and its requests, pycryptodome, ...) is never imported by the server.
# Usage: install.sh DIR
set -eu
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
cpppo=5.2.5
pycomm3=1.2.16
greenery=2.1
check="import importlib.metadata as m, sys
sys.exit(m.version('cpppo') != '$cpppo' or m.version('pycomm3') != '$pycomm3'
         or m.version('greenery') != '$greenery')"
if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "$check" 2>/dev/null; then
    exit 0
fi
[ -x "$dir/bin/python" ] || python3 -m venv "$dir"
"$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    "cpppo==$cpppo" "greenery==$greenery" "pycomm3==$pycomm3"
"$dir/bin/python" -c "$check"
