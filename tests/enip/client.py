#!/usr/bin/env python3
"""An EtherNet/IP (CIP) client (pycomm3) for Conduit's tests, against tests/enip/server.py. Opens
one TCP session (TCP connect + RegisterSession; "connected" tells whether both succeeded), runs
each request of the command line in it, and prints one JSON object: {"connected": bool,
"results": {"REQ": "ok" | "error" | "no_answer"}}: "error" is an answer carrying an error status,
"no_answer" a request that got no answer within 1.5 s or whose connection was closed or reset
(then the next request opens a new session). The whole run stops within ~10 s.

REQ (CIP service and path; "connected" = Forward_Open 0x5B once per session, then SendUnitData):
  read              Read Tag 0x4C, tag Counter, connected
  write             Write Tag 0x4D, tag Setpoint (REAL), connected
  read_multi        Multiple Service Packet 0x0A of two Read Tag, connected
  write_multi       Multiple Service Packet 0x0A of two Write Tag, connected
  read_unconnected  Read Tag 0x4C, tag Counter, unconnected (SendRRData)
  get_attr          Get_Attribute_Single 0x0E, Identity class 1 instance 1 attribute 7, unconnected
  get_attr_all      Get_Attributes_All 0x01, Identity class 1 instance 1, unconnected
  unconnected_send  Get_Attribute_Single as get_attr, inside Unconnected_Send 0x52 to the
                    Connection Manager (class 6 instance 1), route path backplane slot 0
  reset             Reset 0x05, Identity class 1 instance 1, unconnected
  list_identity     encapsulation command ListIdentity 0x63
  list_services     encapsulation command ListServices 0x04

Run it with the virtualenv's python (tests/enip/install.sh DIR).
Usage: client.py HOST PORT REQ [REQ ...]"""
import json
import logging
import struct
import sys
import time

from pycomm3 import ClassCode, LogixDriver, Services
from pycomm3.cip import PADDED_EPATH, DataSegment, DataTypes, PortSegment
from pycomm3.exceptions import CommError
from pycomm3.packets import GenericUnconnectedRequestPacket, SendRRDataRequestPacket
from pycomm3.packets.logix import WriteTagRequestPacket

TIMEOUT = 1.5  # seconds for one answer
BUDGET = 8.5  # seconds for the whole run, before closing the session

logging.disable(logging.CRITICAL)
start = time.monotonic()


def remaining():
    return BUDGET - (time.monotonic() - start)


class NoAnswer(Exception):
    pass


class Client(LogixDriver):
    """LogixDriver without its start-up traffic (ListIdentity, identity and program-name reads,
    tag list upload): open() is TCP connect + RegisterSession, and the tags are declared here.
    Symbolic tag paths (ANSI extended symbol segment 0x91), not Symbol-object instance ids."""

    def _initialize_driver(self, *args, **kwargs):
        self._cfg["use_instance_ids"] = False

    def _receive(self):
        if remaining() <= 0:
            raise NoAnswer()
        self._sock.sock.settimeout(min(TIMEOUT, remaining()))
        return super()._receive()

    def _write_build_single_request(self, parsed_tag):
        # pycomm3 1.2.x builds a single Write Tag's message twice and sends it doubled (which
        # cpppo rejects by closing the session): start the message anew.
        request = super()._write_build_single_request(parsed_tag)
        if isinstance(request, WriteTagRequestPacket):
            request._msg, request._msg_setup = [], False
        return request

    def drop(self):
        """Forgets the session without a word to the server (it may not be answering)."""
        try:
            self._sock.close()
        except Exception:
            pass
        self._sock, self._session, self._target_cid = None, 0, None
        self._target_is_connected = self._connection_opened = False


def atomic(name, type_name):
    return {
        "tag_name": name, "dim": 0, "dimensions": [0, 0, 0], "alias": False, "instance_id": 0,
        "tag_type": "atomic", "data_type": type_name, "data_type_name": type_name,
        "type_class": DataTypes.get(type_name), "external_access": "Read/Write",
    }


class SymbolicUnconnectedRequest(GenericUnconnectedRequestPacket):
    """An unconnected request whose path is a tag name (ANSI extended symbol segment)."""

    def __init__(self, service, tag, request_data=b""):
        super().__init__(service=service, class_code=0, instance=0, request_data=request_data)
        self.tag = tag

    def _setup_message(self):
        SendRRDataRequestPacket._setup_message(self)
        path = PADDED_EPATH.encode([DataSegment(self.tag)], length=True)
        self._msg += [self.service, path, self.request_data]


def cip(tag):
    return "ok" if tag and not tag.error else "error"


def cip_all(tags):
    return "ok" if all(not t.error for t in tags) else "error"


def encapsulation(command):
    """Sends an encapsulation command with no data in the session; "ok" if the answer is that
    command with status 0 and some data."""
    header = struct.pack("<HHII8sI", command, 0, c._session, 0, b"_conduit", 0)
    c._send(header)
    reply = c._receive()
    answer, length, _, status = struct.unpack_from("<HHII", reply)
    return "ok" if answer == command and status == 0 and length > 0 else "error"


def unconnected(service, class_code, instance, attribute=b"", **kwargs):
    return cip(c.generic_message(
        service=service, class_code=class_code, instance=instance, attribute=attribute,
        connected=False, route_path=False, **kwargs))


requests = {
    "read": lambda: cip(c.read("Counter")),
    "write": lambda: cip(c.write("Setpoint", 21.5)),
    "read_multi": lambda: cip_all(c.read("Counter", "Setpoint")),
    "write_multi": lambda: cip_all(c.write(("Counter", 7), ("Setpoint", 1.25))),
    "read_unconnected": lambda: cip(c.send(SymbolicUnconnectedRequest(
        Services.read_tag, "Counter", b"\x01\x00"))),
    "get_attr": lambda: unconnected(Services.get_attribute_single, ClassCode.identity_object, 1, 7),
    "get_attr_all": lambda: unconnected(Services.get_attributes_all, ClassCode.identity_object, 1),
    "unconnected_send": lambda: cip(c.generic_message(
        service=Services.get_attribute_single, class_code=ClassCode.identity_object, instance=1,
        attribute=7, connected=False, unconnected_send=True,
        route_path=[PortSegment("bp", 0)])),
    "reset": lambda: unconnected(Services.reset, ClassCode.identity_object, 1),
    "list_identity": lambda: "ok" if c._list_identity() else "error",
    "list_services": lambda: encapsulation(0x0004),
}

host, port, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
unknown = [n for n in names if n not in requests]
if unknown:
    sys.exit("unknown REQ %s; known: %s" % (" ".join(unknown), " ".join(requests)))


def open_session():
    c.socket_timeout = max(0.1, min(TIMEOUT, remaining()))
    try:
        return bool(c.open())
    except Exception:
        c.drop()
        return False


c = Client("%s:%d" % (host, port), init_tags=False, init_program_tags=False)
c._tags = {"Counter": atomic("Counter", "INT"), "Setpoint": atomic("Setpoint", "REAL")}
out = {"connected": open_session(), "results": {}}
if not out["connected"]:
    c.drop()
for name in names:
    if not out["connected"] or remaining() <= 0 or not (c.connected or open_session()):
        result = "no_answer"
    else:
        try:
            result = requests[name]()
        except (CommError, NoAnswer, OSError):  # no answer in time, or the connection was lost
            result = "no_answer"
        except Exception:  # an answer pycomm3 refused, e.g. a failed Forward_Open
            result = "error"
        if result == "no_answer":
            c.drop()
    out["results"][name] = result
if c.connected:
    # Forward_Close and UnRegisterSession, each given what is left of the run (≥ 0.5 s).
    BUDGET = max(BUDGET, time.monotonic() - start + 1.0)
    try:
        c.close()
    except Exception:
        pass
    c.drop()
print(json.dumps(out))
