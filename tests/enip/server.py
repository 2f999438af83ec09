#!/usr/bin/env python3
"""An EtherNet/IP (CIP) server (cpppo's Logix simulator) for Conduit's tests: writable tags
Counter (INT) and Setpoint (REAL), the Identity object (class 1 instance 1, answering
Get_Attribute_Single/All/List and, added here, Reset 0x05, which only answers), the Connection
Manager (Forward_Open, Unconnected_Send) and ListIdentity over TCP and UDP. Run it with the
virtualenv's python (tests/enip/install.sh DIR). Usage: server.py ADDRESS [PORT]   (PORT: 44818)"""
import logging
import sys
import threading

from cpppo.automata import dfa_post, state
from cpppo.server.enip import device
from cpppo.server.enip.main import main
from cpppo.server.enip.parser import EPATH, USINT, move_if, octets_noop, typed_data


class Identity(device.Identity):
    """The Identity object, with its own service table so that Reset can be added to it."""

    service = {}
    transit = {}
    lock = threading.Lock()
    parser = dfa_post(service, initial=state("Idn svc"), terminal=True)
    RESET_REQ = 0x05
    RESET_CTX = "reset"

    def request(self, data, addr=None):
        if data.get("service") != self.RESET_REQ:
            return super().request(data, addr=addr)
        logging.warning("Identity Reset (type %r): answered, nothing reset", data.get("reset.data"))
        data.service |= 0x80
        data.status = 0x00
        data.pop("status_ext", None)
        data.input = bytearray(self.produce(data))
        return True


def _reset():
    srvc = USINT(context="service")
    srvc[True] = path = EPATH(context="path")
    path[True] = typed_data(context=Identity.RESET_CTX, tag_type=USINT.tag_type, terminal=True)
    path[None] = mark = octets_noop(context=Identity.RESET_CTX, terminal=True)
    mark.initial[None] = move_if("mark", initializer=True)
    return srvc


for number, name, short in (
    (device.Object.GA_ALL_REQ, device.Object.GA_ALL_NAM, device.Object.GA_ALL_CTX),
    (device.Object.GA_LST_REQ, device.Object.GA_LST_NAM, device.Object.GA_LST_CTX),
    (device.Object.GA_SNG_REQ, device.Object.GA_SNG_NAM, device.Object.GA_SNG_CTX),
    (device.Object.SA_SNG_REQ, device.Object.SA_SNG_NAM, device.Object.SA_SNG_CTX),
):
    builder = getattr(device, "__" + short)  # cpppo's own request parser for that service
    Identity.register_service_parser(number=number, name=name, short=short, machine=builder())
Identity.register_service_parser(
    number=Identity.RESET_REQ, name="Reset", short=Identity.RESET_CTX, machine=_reset()
)

address = sys.argv[1]
port = int(sys.argv[2]) if len(sys.argv) > 2 else 44818
sys.exit(
    main(
        argv=["--no-config", "-a", "%s:%d" % (address, port), "Counter=INT", "Setpoint=REAL"],
        identity_class=Identity,
    )
)
