#!/usr/bin/env python3
"""A DNP3 master over TCP (yadnp3, an opendnp3 3.x fork; see install.sh) for Conduit's tests.
Runs each request of the command line, in order, in one TCP session (a new one if the
connection is lost) and prints one JSON object: {"connected": bool, "results": {"REQ": "ok" |
"error" | "no_answer"}} where "error" is an answer that refuses the request (IIN2 error bits,
a command status other than SUCCESS, a malformed answer) and "no_answer" a request that got no
answer within 1.5 s (dropped on the way, or the connection failed or was reset). Exits within
about 10 s whatever happens: requests left when less than 1.5 s remains are not sent and are
reported "no_answer" (at most 4 or 5 requests per run when many are dropped).

REQ (application function codes sent):
  read            integrity poll, class 1, 2, 3 and 0 (READ, 1)
  operate         CROB latch on binary output 0 (DIRECT_OPERATE, 5)
  select_operate  CROB latch off binary output 1 (SELECT, 3, then OPERATE, 4)
  cold_restart    (COLD_RESTART, 13)
  write           IIN clear, g80v1 index 7 = 0 (WRITE, 2)
Each request is one link frame in one TCP segment (one fragment, FIR and FIN). On each
connection the library also runs its own startup tasks, unreported: an integrity poll (READ, 1)
at once, and ENABLE_UNSOLICITED (20) for classes 1-3 when no request is waiting; one that gets
no answer costs 1.5 s and is not tried again in this run.

Usage: master.py HOST PORT OUTSTATION_LINK_ADDRESS MASTER_LINK_ADDRESS REQ [REQ ...]
(run with the virtualenv's python)"""
import json
import os
import sys
import threading
import time

import opendnp3 as o

START = time.monotonic()
BUDGET = 9.5  # seconds for the whole run, before the shutdown
TIMEOUT_MS = 1500

host, port = sys.argv[1], int(sys.argv[2])
outstation_address, master_address, requests = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
for r in requests:
    if r not in ("read", "operate", "select_operate", "cold_restart", "write"):
        sys.exit(f"unknown request {r}")


def remaining():
    return BUDGET - (time.monotonic() - START)


class Listener(o.IChannelListener):
    def __init__(self):
        super().__init__()
        self.open = threading.Event()
        self.ever_open = False

    def OnStateChange(self, state):
        if state == o.ChannelState.OPEN:
            self.ever_open = True
            self.open.set()
        else:
            self.open.clear()


NO_ANSWER = (o.TaskCompletion.FAILURE_RESPONSE_TIMEOUT, o.TaskCompletion.FAILURE_NO_COMMS,
             o.TaskCompletion.FAILURE_START_TIMEOUT)


class Task:
    """The one user task in flight: how it ended, and whether its answer refused it."""

    def __init__(self, name):
        self.name = name
        self.done = threading.Event()
        self.started = False  # the library may run its own startup tasks first
        self.summary = None
        self.iin_error = False  # IIN2 request error bits in the answer
        self.command_error = False  # a command status or state other than SUCCESS

    def result(self):
        if self.summary == o.TaskCompletion.SUCCESS:
            return "error" if self.iin_error or self.command_error else "ok"
        if self.summary == o.TaskCompletion.FAILURE_BAD_RESPONSE and self.name == "read":
            # PerformFunction expects an answer without objects: a READ's answer has some.
            return "error" if self.iin_error else "ok"
        if self.summary is None or self.summary in NO_ANSWER:
            return "no_answer"
        return "error"


class Application(o.IMasterApplication):
    task = None

    def OnTaskStart(self, type, id):
        if type == o.MasterTaskType.USER_TASK and self.task is not None:
            self.task.started = True

    def OnTaskComplete(self, info):
        task = self.task
        if info.type == o.MasterTaskType.USER_TASK and task is not None and task.started \
                and task.summary is None:
            task.summary = info.result
            if info.result in NO_ANSWER:
                task.done.set()

    def OnReceiveIIN(self, iin):
        # Called right after OnTaskComplete for the answer that ended the task.
        task = self.task
        if task is not None and task.summary is not None and not task.done.is_set():
            task.iin_error = iin.HasRequestError()
            task.done.set()

    def OnOpen(self):
        pass

    def OnClose(self):
        pass

    def AssignClassDuringStartup(self):
        return False

    def Now(self):
        return o.UTCTimestamp(int(time.time() * 1000))


class Measurements(o.ISOEHandler):
    def BeginFragment(self, info):
        pass

    def EndFragment(self, info):
        pass

    def Process(self, info, values):
        pass


def command_done(task):
    def callback(result):
        for point in result.to_list():
            if point.state != o.CommandPointState.SUCCESS \
                    or point.status != o.CommandStatus.SUCCESS:
                task.command_error = True
    return callback


config = o.MasterStackConfig()
config.link.LocalAddr = master_address
config.link.RemoteAddr = outstation_address
config.master.responseTimeout = o.TimeDuration.Milliseconds(TIMEOUT_MS)
config.master.disableUnsolOnStartup = False  # no DISABLE_UNSOLICITED (21) on connection
config.master.ignoreRestartIIN = True  # no automatic WRITE (2) of g80v1 on IIN1.7
config.master.timeSyncMode = getattr(o.TimeSyncMode, "None")  # no time sync on IIN1.4
config.master.taskRetryPeriod = o.TimeDuration.Minutes(1)  # failed startup tasks: not again
config.master.maxTaskRetryPeriod = o.TimeDuration.Minutes(1)
config.master.taskStartTimeout = o.TimeDuration.Milliseconds(int(BUDGET * 1000))

manager = o.DNP3Manager(1)
listener, application, soe = Listener(), Application(), Measurements()
retry = o.ChannelRetry(o.TimeDuration.Milliseconds(300), o.TimeDuration.Milliseconds(1000))
channel = manager.AddTCPClient("client", o.levels.NOTHING, retry, [o.IPEndpoint(host, port)],
                               "0.0.0.0", listener)
master = channel.AddMaster("master", soe, application, config)
master.Enable()

crob = o.ControlRelayOutputBlock
# READ goes through PerformFunction, not ScanClasses: a scan has a lower priority than the
# library's startup tasks, which block it until they succeed (never, if a firewall drops them).
integrity = [o.Header.AllObjects(60, v) for v in (2, 3, 4, 1)]  # class 1, 2, 3, then 0
send = {
    "read": lambda t: master.PerformFunction("read", o.FunctionCode.READ, integrity),
    "operate": lambda t: master.DirectOperate(crob(o.OperationType.LATCH_ON), 0, command_done(t)),
    "select_operate": lambda t: master.SelectAndOperate(crob(o.OperationType.LATCH_OFF), 1,
                                                        command_done(t)),
    "cold_restart": lambda t: master.Restart(o.RestartType.COLD, lambda result: None),
    "write": lambda t: master.PerformFunction(
        "write", o.FunctionCode.WRITE, [o.Header.Raw(bytes([80, 1, 0x00, 7, 7, 0x00]))]),
}

listener.open.wait(min(2.0, remaining()))
out = {"connected": listener.ever_open, "results": {}}
for name in requests:
    task = Task(name)
    # After a lost connection the channel reconnects by itself: give it a moment.
    if listener.ever_open and remaining() > TIMEOUT_MS / 1000 \
            and listener.open.wait(min(1.5, remaining())):
        application.task = task
        send[name](task)
        if not task.done.wait(max(0.0, remaining())) and task.summary is not None:
            task.done.wait(0.2)  # the answer's IIN comes right after the completion
        application.task = None
    out["results"][name] = task.result()
print(json.dumps(out), flush=True)

# Close the session (FIN), but never hang on the library's shutdown.
closer = threading.Thread(target=manager.Shutdown, daemon=True)
closer.start()
closer.join(1.0)
os._exit(0)
