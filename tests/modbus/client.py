#!/usr/bin/python3
"""A Modbus/TCP client (pymodbus) for Conduit's tests. Runs each request of the command line
in one TCP session and prints one JSON object: {"connected": bool, "results": {"N": "ok" |
"exception" | "no_answer"}} where N is the request's function code: "exception" is a
Modbus exception response from the server, "no_answer" a request that got no answer (dropped
on the way, or the connection failed).

Usage: client.py HOST UNIT FC [FC ...]   (FC: 1, 2, 3, 4, 5, 6, 15, 16)"""
import json
import logging
import sys

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusIOException

logging.basicConfig(level=logging.CRITICAL)
host, unit, codes = sys.argv[1], int(sys.argv[2]), [int(c) for c in sys.argv[3:]]
c = ModbusTcpClient(host, port=502, timeout=1.5, retries=0, retry_on_empty=False)
requests = {
    1: lambda: c.read_coils(0, 8, slave=unit),
    2: lambda: c.read_discrete_inputs(0, 8, slave=unit),
    3: lambda: c.read_holding_registers(0, 4, slave=unit),
    4: lambda: c.read_input_registers(0, 2, slave=unit),
    5: lambda: c.write_coil(1, True, slave=unit),
    6: lambda: c.write_register(1, 42, slave=unit),
    15: lambda: c.write_coils(2, [True, False], slave=unit),
    16: lambda: c.write_registers(2, [1, 2, 3], slave=unit),
}
out = {"connected": bool(c.connect()), "results": {}}
for code in codes:
    try:
        r = requests[code]()
        if r is None or isinstance(r, ModbusIOException):
            result = "no_answer"
        else:
            result = "exception" if r.isError() else "ok"
    except Exception:  # a connection that failed or was reset
        result = "no_answer"
    out["results"][str(code)] = result
    if result == "no_answer":
        # The session is unusable after a lost answer (transaction ids drift): reconnect.
        c.close()
        c.connect()
c.close()
print(json.dumps(out))
