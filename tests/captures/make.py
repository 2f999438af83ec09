#!/usr/bin/env python3
"""Writes corpus.pcap, next to this script: a small capture that walks the XDP datapath's
verdict paths under corpus.yaml (same directory), for `conduit replay` on several kernels.

Regenerate (from the repository root; needs scapy, e.g. Debian's python3-scapy):

    python3 tests/captures/make.py

The output is byte-for-byte deterministic: fixed timestamps (1700000000.000 s, then 1 ms per
frame), MACs, addresses, ports, sequence numbers and payloads; nothing random. Every frame is
padded to the Ethernet minimum of 60 bytes (without FCS), as a NIC delivers it.

Each frame carries the verdict it was written for. `--expect` prints them in the text format of
`conduit replay`, so that a run can be checked with

    diff <(python3 tests/captures/make.py --expect) \\
         <(sudo target/release/conduit replay tests/captures/corpus.yaml tests/captures/corpus.pcap)

The frames follow README.md's list (tests/captures/README.md): one conversation after another.
"""
import struct
import sys
from decimal import Decimal
from pathlib import Path

try:
    from scapy.all import (
        ARP,
        ICMP,
        IP,
        TCP,
        UDP,
        Dot1AD,
        Dot1Q,
        Ether,
        ICMPv6EchoReply,
        ICMPv6EchoRequest,
        ICMPv6ND_NS,
        ICMPv6NDOptSrcLLAddr,
        IPv6,
        IPv6ExtHdrFragment,
        Raw,
        conf,
        wrpcap,
    )
    from scapy.data import DLT_EN10MB
except ImportError:  # pragma: no cover
    sys.exit("make.py needs scapy (Debian/Ubuntu: apt install python3-scapy; then run it with "
             "the system's /usr/bin/python3)")

conf.verb = 0

HERE = Path(__file__).resolve().parent
OUT = HERE / "corpus.pcap"
T0 = Decimal("1700000000.000")
STEP = Decimal("0.001")
ETH_MIN = 60  # the Ethernet minimum frame without its FCS

# --- Hosts (see corpus.yaml) ------------------------------------------------------------------
BCAST = "ff:ff:ff:ff:ff:ff"
HMI, HMI_IP = "02:00:00:03:00:20", "10.3.0.20"            # supervisory, MAC-bound
ENG, ENG_IP = "02:00:00:03:00:30", "10.3.0.30"            # supervisory, MAC-bound
PLC1, PLC1_IP = "02:00:00:02:00:10", "10.2.0.10"          # control, MAC-bound
PLC2, PLC2_IP = "02:00:00:02:00:11", "10.2.0.11"          # control, MAC-bound
HMI6, HMI6_IP = "02:00:00:03:01:20", "fd00:3::20"         # supervisory, MAC-bound
PLC16, PLC16_IP = "02:00:00:02:01:10", "fd00:2::10"       # control, MAC-bound
OFFICE, OFFICE_IP = "02:00:00:04:01:50", "10.4.1.50"      # enterprise (office-lan cidr), unbound
ROUTER = "02:00:00:00:00:fe"                              # the upstream router (internet side)
WEB_IP = "198.51.100.10"                                  # unknown: a web server on the internet
ATTACKER, ATTACKER_IP = "02:00:00:ee:00:66", "192.0.2.66" # unknown, unbound
ROGUE = "02:00:00:ee:00:01"                               # a MAC that no asset owns

# Flags
SYN, SYNACK, ACK, PSHACK, FINACK, RSTACK = "S", "SA", "A", "PA", "FA", "RA"
MSS = [("MSS", 1460)]


def tcp(smac, dmac, src, dst, sport, dport, flags, seq, ack=0, payload=b"", v6=False, opts=None):
    ip = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)
    t = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=64240,
            options=opts if opts is not None else (MSS if "S" in flags else []))
    p = Ether(src=smac, dst=dmac) / ip / t
    return p / Raw(payload) if payload else p


def udp(smac, dmac, src, dst, sport, dport, payload):
    return Ether(src=smac, dst=dmac) / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload)


PING = b"abcdefghijklmnopqrstuvwabcdefghi"  # 32 bytes, as Windows' ping sends


def ping(smac, dmac, src, dst, ident, seq, reply=False):
    return (Ether(src=smac, dst=dmac) / IP(src=src, dst=dst)
            / ICMP(type=0 if reply else 8, id=ident, seq=seq) / Raw(PING))


def mbap(tid, unit, pdu):
    """A Modbus/TCP ADU: MBAP header (transaction, protocol 0, length) and the PDU."""
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def arp(smac, dmac, op, hwsrc, psrc, hwdst, pdst):
    return Ether(src=smac, dst=dmac) / ARP(op=op, hwsrc=hwsrc, psrc=psrc, hwdst=hwdst, pdst=pdst)


def enip_list_identity_request():
    # Encapsulation header: command 0x0063 (ListIdentity), length 0, session 0, status 0,
    # sender context, options 0 (little-endian).
    return struct.pack("<HHII8sI", 0x0063, 0, 0, 0, b"corpus01", 0)


def enip_list_identity_response():
    name = b"1756-L83E/B"
    item = (struct.pack("<H", 1)                                         # encapsulation version
            + struct.pack(">HH4s8s", 2, 44818, bytes([10, 2, 0, 10]), b"\0" * 8)  # sockaddr
            + struct.pack("<HHHBBHI", 1, 0x0E, 166, 33, 11, 0x0030, 0x00C0FFEE)   # vendor..serial
            + bytes([len(name)]) + name + b"\x03")                        # product name, state
    cpf = struct.pack("<HHH", 1, 0x000C, len(item)) + item
    return struct.pack("<HHII8sI", 0x0063, len(cpf), 0, 0, b"corpus01", 0) + cpf


def lldp(smac):
    def tlv(t, v):
        return struct.pack(">H", (t << 9) | len(v)) + v
    mac = bytes(int(b, 16) for b in smac.split(":"))
    body = (tlv(1, b"\x04" + mac)             # chassis ID: MAC address
            + tlv(2, b"\x07" + b"port-1")     # port ID: locally assigned
            + tlv(3, struct.pack(">H", 120))  # TTL
            + tlv(5, b"plc-1")                # system name
            + tlv(0, b""))                    # end
    return Ether(src=smac, dst="01:80:c2:00:00:0e", type=0x88CC) / Raw(body)


def profinet_dcp_identify(smac):
    # PROFINET DCP Identify-All request: FrameID 0xfefe, service Identify (5), request, Xid,
    # response delay 1, one block: all selector (0xff/0xff, length 0).
    body = struct.pack(">HBBIHH", 0xFEFE, 5, 0, 0x00000101, 1, 4) + struct.pack(">BBH", 0xFF, 0xFF, 0)
    return Ether(src=smac, dst="01:0e:cf:00:00:00", type=0x8892) / Raw(body)


# --- The frames, in order, each with the verdict it was written for ---------------------------
# (packet, verdict, reason, conduit or None, what it is)
F = []


def add(pkt, verdict, reason, conduit, what):
    F.append((pkt, verdict, reason, conduit, what))


# 1. An allowed Modbus/TCP session HMI -> PLC-1 with a read-only filter.
C, S = 10000, 50000  # initial sequence numbers of the client (HMI) and the server (PLC)
hp = (HMI_IP, PLC1_IP, 49152, 502)
add(tcp(HMI, PLC1, *hp, SYN, C), "allow", "conduit", "hmi-to-plc", "Modbus: SYN hmi-1 -> plc-1:502")
add(tcp(PLC1, HMI, PLC1_IP, HMI_IP, 502, 49152, SYNACK, S, C + 1), "allow", "reply", "hmi-to-plc", "Modbus: SYN-ACK")
add(tcp(HMI, PLC1, *hp, ACK, C + 1, S + 1), "allow", "conduit", "hmi-to-plc", "Modbus: ACK")
read = mbap(1, 1, struct.pack(">BHH", 3, 0, 10))  # read holding registers 0..9
add(tcp(HMI, PLC1, *hp, PSHACK, C + 1, S + 1, read), "allow", "conduit", "hmi-to-plc",
    "Modbus: read holding registers (function 3), allowed by the read filter")
C1 = C + 1 + len(read)
resp = mbap(1, 1, struct.pack(">BB", 3, 20) + b"".join(struct.pack(">H", 100 + i) for i in range(10)))
add(tcp(PLC1, HMI, PLC1_IP, HMI_IP, 502, 49152, PSHACK, S + 1, C1, resp), "allow", "reply", "hmi-to-plc",
    "Modbus: response with 10 registers (a reply: never inspected)")
S1 = S + 1 + len(resp)
add(tcp(HMI, PLC1, *hp, ACK, C1, S1), "allow", "conduit", "hmi-to-plc", "Modbus: ACK of the response")
write = mbap(2, 1, struct.pack(">BHH", 6, 1, 0x00FF))  # write single register 1 := 255
add(tcp(HMI, PLC1, *hp, PSHACK, C1, S1, write), "deny", "modbus_function", "hmi-to-plc",
    "Modbus: write single register (function 6), not in the read filter")
C2 = C1 + len(write)
pipelined = mbap(3, 1, struct.pack(">BHH", 3, 0, 1)) + mbap(4, 1, struct.pack(">BHH", 3, 1, 1))
add(tcp(HMI, PLC1, *hp, PSHACK, C2, S1, pipelined), "deny", "malformed", "hmi-to-plc",
    "Modbus: two pipelined reads in one segment (one ADU per segment, fails closed)")
C3 = C2 + len(pipelined)
# The gateway dropped the two segments above; the PLC's acknowledgements below are written as
# if they had arrived (the datapath does not follow sequence numbers), so that the capture
# reads as one clean close.
add(tcp(HMI, PLC1, *hp, FINACK, C3, S1), "allow", "conduit", "hmi-to-plc", "Modbus: FIN from the HMI")
add(tcp(PLC1, HMI, PLC1_IP, HMI_IP, 502, 49152, FINACK, S1, C3 + 1), "allow", "reply", "hmi-to-plc", "Modbus: FIN from the PLC")
add(tcp(HMI, PLC1, *hp, ACK, C3 + 1, S1 + 1), "allow", "conduit", "hmi-to-plc", "Modbus: last ACK (flow closing)")

# 2. Enterprise -> PLC: no conduit.
add(tcp(OFFICE, PLC1, OFFICE_IP, PLC1_IP, 51000, 502, SYN, 20000), "deny", "no_conduit", None,
    "SYN office-lan -> plc-1:502 (enterprise -> control has no conduit)")

# 3. A port scan of PLC-1 from an unknown address.
for i, port in enumerate([21, 22, 23, 80, 102, 443, 502, 44818]):
    add(tcp(ATTACKER, PLC1, ATTACKER_IP, PLC1_IP, 40000, port, SYN, 30000 + i, opts=[]),
        "deny", "no_conduit", None, f"port scan from 192.0.2.66 (unknown): SYN to {port}")

# 4. Ping HMI -> PLC-1, allowed, and its reply.
add(ping(HMI, PLC1, HMI_IP, PLC1_IP, 0x0A01, 1), "allow", "conduit", "hmi-to-plc", "ICMP echo request hmi-1 -> plc-1")
add(ping(PLC1, HMI, PLC1_IP, HMI_IP, 0x0A01, 1, reply=True), "allow", "reply", "hmi-to-plc", "ICMP echo reply plc-1 -> hmi-1")

# 5. ICMP echo PLC-1 -> HMI: the reply direction of the flow above, but neither is a reply.
add(ping(PLC1, HMI, PLC1_IP, HMI_IP, 0x0A01, 7), "deny", "no_conduit", None,
    "ICMP echo request plc-1 -> hmi-1, same identifier as the live ping (a reply never opens)")
add(ping(PLC1, HMI, PLC1_IP, HMI_IP, 0x0B0D, 1, reply=True), "deny", "no_conduit", None,
    "ICMP echo reply plc-1 -> hmi-1 that answers no request (no flow)")

# 6. UDP on the engineering conduit: EtherNet/IP ListIdentity eng-ws -> plc-1:44818.
add(udp(ENG, PLC1, ENG_IP, PLC1_IP, 50000, 44818, enip_list_identity_request()),
    "allow", "conduit", "engineering", "UDP eng-ws -> plc-1:44818 (EtherNet/IP ListIdentity)")
add(udp(PLC1, ENG, PLC1_IP, ENG_IP, 44818, 50000, enip_list_identity_response()),
    "allow", "reply", "engineering", "UDP plc-1 -> eng-ws: ListIdentity response")
add(udp(ENG, PLC2, ENG_IP, PLC2_IP, 50001, 44818, enip_list_identity_request()),
    "deny", "no_conduit", None, "UDP eng-ws -> plc-2:44818 (engineering is narrowed to plc-1)")
add(udp(HMI, PLC1, HMI_IP, PLC1_IP, 50002, 44818, enip_list_identity_request()),
    "deny", "no_conduit", None, "UDP hmi-1 -> plc-1:44818 (engineering is narrowed to eng-ws)")

# 7. Spoofing: the HMI's address from another MAC, and the HMI's MAC with another address.
add(tcp(ROGUE, PLC1, HMI_IP, PLC1_IP, 49153, 502, SYN, 40000), "deny", "spoofed", None,
    "SYN from 10.3.0.20 (hmi-1) with a MAC that is not hmi-1's")
add(tcp(HMI, PLC1, "10.3.0.99", PLC1_IP, 49154, 502, SYN, 40100), "deny", "spoofed", None,
    "SYN from hmi-1's MAC with another source address (10.3.0.99)")

# 8. ARP: a request and its reply, then a reply that claims plc-1's address from a wrong MAC.
add(arp(PLC1, BCAST, 1, PLC1, PLC1_IP, "00:00:00:00:00:00", PLC2_IP), "allow", "arp", None,
    "ARP who-has 10.2.0.11 tell 10.2.0.10 (plc-1)")
add(arp(PLC2, PLC1, 2, PLC2, PLC2_IP, PLC1, PLC1_IP), "allow", "arp", None,
    "ARP reply 10.2.0.11 is-at plc-2's MAC")
add(arp(ATTACKER, PLC2, 2, ATTACKER, PLC1_IP, PLC2, PLC2_IP), "deny", "arp_spoof", None,
    "ARP reply 10.2.0.10 (plc-1) is-at 02:00:00:ee:00:66 (poisoning)")

# 9. VLAN tags: the ping again behind one 802.1Q tag, its reply behind two (QinQ), and a
# frame with three tags (one more than the parser accepts).
add(Ether(src=HMI, dst=PLC1) / Dot1Q(vlan=10) / IP(src=HMI_IP, dst=PLC1_IP) / ICMP(type=8, id=0x0A01, seq=2) / Raw(PING),
    "allow", "conduit", "hmi-to-plc", "802.1Q (VLAN 10): ICMP echo request hmi-1 -> plc-1")
add(Ether(src=PLC1, dst=HMI) / Dot1AD(vlan=100) / Dot1Q(vlan=10) / IP(src=PLC1_IP, dst=HMI_IP) / ICMP(type=0, id=0x0A01, seq=2) / Raw(PING),
    "allow", "reply", "hmi-to-plc", "QinQ (802.1ad 100, 802.1Q 10): ICMP echo reply plc-1 -> hmi-1")
add(Ether(src=HMI, dst=PLC1) / Dot1AD(vlan=100) / Dot1Q(vlan=10) / Dot1Q(vlan=20) / IP(src=HMI_IP, dst=PLC1_IP) / ICMP(type=8, id=0x0A01, seq=3) / Raw(PING),
    "deny", "malformed", None, "three VLAN tags: ICMP echo request hmi-1 -> plc-1")

# 10. IPv6 between the v6 assets: a Modbus SYN and its SYN-ACK, a ping, neighbour solicitation.
h6 = (HMI6_IP, PLC16_IP, 49200, 502)
add(tcp(HMI6, PLC16, *h6, SYN, 60000, v6=True), "allow", "conduit", "hmi-to-plc", "IPv6 SYN fd00:3::20 -> [fd00:2::10]:502")
add(tcp(PLC16, HMI6, PLC16_IP, HMI6_IP, 502, 49200, SYNACK, 70000, 60001, v6=True), "allow", "reply", "hmi-to-plc", "IPv6 SYN-ACK")
add(tcp(HMI6, PLC16, *h6, ACK, 60001, 70001, v6=True), "allow", "conduit", "hmi-to-plc", "IPv6 ACK")
add(Ether(src=HMI6, dst=PLC16) / IPv6(src=HMI6_IP, dst=PLC16_IP) / ICMPv6EchoRequest(id=0x0C01, seq=1, data=PING),
    "allow", "conduit", "hmi-to-plc", "ICMPv6 echo request fd00:3::20 -> fd00:2::10")
add(Ether(src=PLC16, dst=HMI6) / IPv6(src=PLC16_IP, dst=HMI6_IP) / ICMPv6EchoReply(id=0x0C01, seq=1, data=PING),
    "allow", "reply", "hmi-to-plc", "ICMPv6 echo reply")
add(Ether(src=HMI6, dst="33:33:ff:00:00:01") / IPv6(src=HMI6_IP, dst="ff02::1:ff00:1", hlim=255)
    / ICMPv6ND_NS(tgt="fd00:3::1") / ICMPv6NDOptSrcLLAddr(lladdr=HMI6),
    "allow", "neighbor_discovery", None, "ICMPv6 neighbour solicitation for fd00:3::1 from fd00:3::20")

# 11. A non-first IPv4 fragment (offset 1480, last).
add(Ether(src=HMI, dst=PLC1) / IP(src=HMI_IP, dst=PLC1_IP, proto=17, id=0x4242, frag=185) / Raw(bytes(range(48))),
    "deny", "fragment", None, "IPv4 non-first fragment hmi-1 -> plc-1 (defaults.fragments: deny)")

# 12. Malformed: IHL 4, and a TCP header cut short by the IP total length.
add(Ether(src=HMI, dst=PLC1) / IP(src=HMI_IP, dst=PLC1_IP, ihl=4) / TCP(sport=49155, dport=502, flags=SYN, seq=1),
    "deny", "malformed", None, "IPv4 with IHL 4 (< 5)")
add(Ether(src=HMI, dst=PLC1) / IP(src=HMI_IP, dst=PLC1_IP, proto=6)
    / Raw(bytes(TCP(sport=49156, dport=502, flags=SYN, seq=1))[:10]),
    "deny", "malformed", None, "IPv4 TCP with 10 of its 20 header bytes")

# 13. Layer 2: LLDP (allowed by l2.allow_ethertypes) and PROFINET DCP (0x8892, not allowed).
add(lldp(PLC1), "allow", "l2_allowed", None, "LLDP from plc-1 (ethertype 0x88cc)")
add(profinet_dcp_identify(ENG), "deny", "l2_denied", None, "PROFINET DCP Identify from eng-ws (ethertype 0x8892)")

# 14. A reset in a live flow: S7comm (tcp 102) eng-ws -> plc-1, reset by the PLC; the PLC's
# next segment finds no flow.
ep = (ENG_IP, PLC1_IP, 50100, 102)
add(tcp(ENG, PLC1, *ep, SYN, 80000), "allow", "conduit", "engineering", "S7: SYN eng-ws -> plc-1:102")
add(tcp(PLC1, ENG, PLC1_IP, ENG_IP, 102, 50100, SYNACK, 90000, 80001), "allow", "reply", "engineering", "S7: SYN-ACK")
add(tcp(ENG, PLC1, *ep, ACK, 80001, 90001), "allow", "conduit", "engineering", "S7: ACK")
add(tcp(PLC1, ENG, PLC1_IP, ENG_IP, 102, 50100, RSTACK, 90001, 80001), "allow", "reply", "engineering",
    "S7: RST from plc-1 (a reply; removes the flow)")
add(tcp(PLC1, ENG, PLC1_IP, ENG_IP, 102, 50100, ACK, 90001, 80001), "deny", "no_conduit", None,
    "S7: a late ACK from plc-1 after the reset (the flow is gone)")

# 15. ICMP port unreachable quoting a live UDP flow, back to its initiator; and one about a
# packet that opened no flow.
probe = IP(src=ENG_IP, dst=PLC1_IP) / UDP(sport=50200, dport=2222) / Raw(b"\x00" * 16)
add(Ether(src=ENG, dst=PLC1) / probe, "allow", "conduit", "engineering", "UDP eng-ws -> plc-1:2222")
add(Ether(src=PLC1, dst=ENG) / IP(src=PLC1_IP, dst=ENG_IP) / ICMP(type=3, code=3) / Raw(bytes(IP(bytes(probe)))),
    "allow", "reply", "engineering", "ICMP port unreachable plc-1 -> eng-ws quoting that datagram")
stray = IP(src=HMI_IP, dst=PLC1_IP) / UDP(sport=50300, dport=2222) / Raw(b"\x00" * 16)
add(Ether(src=PLC1, dst=HMI) / IP(src=PLC1_IP, dst=HMI_IP) / ICMP(type=3, code=3) / Raw(bytes(IP(bytes(stray)))),
    "deny", "no_conduit", None, "ICMP port unreachable plc-1 -> hmi-1 quoting a datagram of no flow")

# 16. More of the policy: internet egress, the intra-zone rules, an IPv6 fragment.
add(tcp(OFFICE, ROUTER, OFFICE_IP, WEB_IP, 51001, 443, SYN, 100000), "allow", "conduit", "internet-egress",
    "SYN office-lan -> 198.51.100.10:443 (to: unknown)")
add(tcp(ROUTER, OFFICE, WEB_IP, OFFICE_IP, 443, 51001, SYNACK, 110000, 100001), "allow", "reply", "internet-egress",
    "SYN-ACK from the web server")
add(tcp(ROUTER, OFFICE, WEB_IP, OFFICE_IP, 40001, 3389, SYN, 120000), "deny", "no_conduit", None,
    "SYN 198.51.100.10 -> office-lan:3389 (unknown -> enterprise has no conduit)")
add(tcp(HMI, ENG, HMI_IP, ENG_IP, 49157, 3389, SYN, 130000), "allow", "intra_zone", None,
    "SYN hmi-1 -> eng-ws:3389 (supervisory: intra_zone allow)")
add(tcp(PLC1, PLC2, PLC1_IP, PLC2_IP, 49158, 502, SYN, 140000), "deny", "no_conduit", None,
    "SYN plc-1 -> plc-2:502 (control: intra_zone deny)")
add(Ether(src=HMI6, dst=PLC16) / IPv6(src=HMI6_IP, dst=PLC16_IP) / IPv6ExtHdrFragment(nh=17, offset=185, m=0, id=0x4242)
    / Raw(bytes(range(48))), "deny", "fragment", None, "IPv6 non-first fragment fd00:3::20 -> fd00:2::10")


def frames():
    """The frames as scapy packets: padded to the Ethernet minimum, timestamps set."""
    out = []
    for i, (p, *_rest) in enumerate(F):
        raw = bytes(p)
        if len(raw) < ETH_MIN:
            raw += b"\0" * (ETH_MIN - len(raw))
        q = Ether(raw)
        assert bytes(q) == raw, f"frame {i + 1} does not survive a round trip through scapy"
        q.time = T0 + STEP * i
        out.append(q)
    return out


def expect():
    """The verdicts, in the text format of `conduit replay`."""
    lines = [f"{i + 1:>6} {v:<10} {r:<18} {c or '-'}" for i, (_p, v, r, c, _w) in enumerate(F)]
    n = {k: sum(1 for f in F if f[1] == k) for k in ("allow", "deny", "would_deny")}
    lines.append(f"{len(F)} frames: {n['allow']} allowed, {n['deny']} denied, {n['would_deny']} would be denied")
    return "\n".join(lines)


def main():
    if "--expect" in sys.argv[1:]:
        print(expect())
        return
    if "--list" in sys.argv[1:]:
        for i, (_p, v, r, c, w) in enumerate(F):
            print(f"{i + 1:>3} | {w} | {v} / {r}" + (f" ({c})" if c else ""))
        return
    wrpcap(str(OUT), frames(), linktype=DLT_EN10MB)
    print(f"wrote {OUT} ({len(F)} frames)")


if __name__ == "__main__":
    main()
