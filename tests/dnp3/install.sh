#!/bin/sh
# Installs the DNP3 library that outstation.py and master.py use (yadnp3: Python bindings of
# an opendnp3 3.x fork, one 3.3 MB manylinux wheel, no dependencies) into a virtualenv in DIR.
# Idempotent: returns at once when DIR already has that version.
# Usage: install.sh DIR   (then: DIR/bin/python tests/dnp3/outstation.py ...)
# PYTHON picks the interpreter (default /usr/bin/python3; Debian needs python3-venv).
set -eu
VERSION=3.2.1.4
DIR=${1:?usage: install.sh DIR}
PYTHON=${PYTHON:-/usr/bin/python3}
CHECK="import importlib.metadata as m, opendnp3; assert m.version('yadnp3') == '$VERSION'"

if [ -x "$DIR/bin/python" ] && "$DIR/bin/python" -c "$CHECK" 2>/dev/null; then
    exit 0
fi
if [ ! -x "$DIR/bin/python" ]; then
    "$PYTHON" -m venv "$DIR"
fi
"$DIR/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
    "yadnp3==$VERSION"
"$DIR/bin/python" -c "$CHECK"
