#!/usr/bin/python3
"""A Modbus/TCP server (pymodbus) for Conduit's tests: holding registers, input registers,
coils and discrete inputs 0..99, answering every unit ID. Usage: server.py ADDRESS [PORT]"""
import logging
import sys

from pymodbus.datastore import (
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
)
from pymodbus.server import StartTcpServer

logging.basicConfig(level=logging.WARNING)
address = sys.argv[1]
port = int(sys.argv[2]) if len(sys.argv) > 2 else 502
block = lambda: ModbusSequentialDataBlock(0, list(range(100)))
store = ModbusSlaveContext(di=block(), co=block(), hr=block(), ir=block())
StartTcpServer(context=ModbusServerContext(slaves=store, single=True), address=(address, port))
