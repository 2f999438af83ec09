#!/usr/bin/env python3
"""A DNP3 outstation over TCP (yadnp3, an opendnp3 3.x fork; see install.sh) for Conduit's tests.
Database: binary inputs 0..3 (g1), analog inputs 0..3 (g30), binary outputs 0..3 (g10 status,
g12v1 CROB by Direct Operate or Select/Operate; index 4 and up: OUT_OF_RANGE). Answers cold and
warm restart (g52v1 delay 1 s; it does not really restart), write of time (g50v1) and IIN
clear (g80v1 index 7; IIN1.7 DEVICE_RESTART is set from the start until a master clears it).
No events and no unsolicited responses (ENABLE_UNSOLICITED gets IIN2.0). Answers any master
link address (respondToAnyMaster), one TCP connection at a time (a new one closes the old);
runs until killed.

Usage: outstation.py ADDRESS PORT LINK_ADDRESS   (run with the virtualenv's python)"""
import signal
import sys
import threading

import opendnp3 as o

POINTS = 4
# Values change without events: no event data in answers, so no CON bit and no application
# CONFIRM (function 0) from the master, and no IIN1.1-1.3 "events available".
QUIET = o.EventMode.Suppress

address, port, link_address = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


class Commands(o.ICommandHandler):
    def Begin(self):
        pass

    def End(self):
        pass

    def Select(self, command, index):
        if not isinstance(command, o.ControlRelayOutputBlock):
            return o.CommandStatus.NOT_SUPPORTED  # analog outputs
        return o.CommandStatus.SUCCESS if index < POINTS else o.CommandStatus.OUT_OF_RANGE

    def Operate(self, command, index, handler, op_type):
        status = self.Select(command, index)
        if status == o.CommandStatus.SUCCESS:
            on = command.opType in (o.OperationType.LATCH_ON, o.OperationType.PULSE_ON)
            handler.Update(o.BinaryOutputStatus(on), index, QUIET)
        return status


class Application(o.IOutstationApplication):
    def SupportsWriteAbsoluteTime(self):
        return True

    def WriteAbsoluteTime(self, timestamp):
        return True

    def SupportsAssignClass(self):
        return False

    def GetApplicationIIN(self):
        return o.ApplicationIIN()

    def ColdRestartSupport(self):
        return o.RestartMode.SUPPORTED_DELAY_COARSE

    def WarmRestartSupport(self):
        return o.RestartMode.SUPPORTED_DELAY_COARSE

    def ColdRestart(self):
        return 1  # seconds until the master may talk again

    def WarmRestart(self):
        return 1


database = o.DatabaseConfig(POINTS)
for kind in ("counter", "frozen_counter", "double_binary", "analog_output_status",
             "octet_string", "time_and_interval"):
    setattr(database, kind, {})
config = o.OutstationStackConfig(database)
config.outstation.eventBufferConfig = o.EventBufferConfig.AllTypes(10)
config.outstation.params.allowUnsolicited = False
config.outstation.params.respondToAnyMaster = True
config.link.LocalAddr = link_address
config.link.RemoteAddr = 1  # the default master address; any master is answered

manager = o.DNP3Manager(1)
channel = manager.AddTCPServer("server", o.levels.NOTHING, o.ServerAcceptMode.CloseExisting,
                               o.IPEndpoint(address, port), None)
# Keep references: the stack calls back into these objects.
commands, application = Commands(), Application()
outstation = channel.AddOutstation("outstation", commands, application, config)
updates = o.UpdateBuilder()
for i in range(POINTS):
    updates.Update(o.Binary(i % 2 == 1), i, QUIET)
    updates.Update(o.Analog(float(10 * i)), i, QUIET)
    updates.Update(o.BinaryOutputStatus(False), i, QUIET)
outstation.Apply(updates.Build())
outstation.Enable()

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
while not stop.wait(0.5):
    pass
manager.Shutdown()
