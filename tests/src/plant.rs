//! A small Purdue plant made of network namespaces, for end-to-end scenarios: a gateway
//! namespace (where the agent runs) and one namespace per host (enterprise workstation, DMZ
//! historian, supervisory HMI and engineering workstation, control PLC1 and PLC2, and an
//! outsider that belongs to no zone), each host joined to the gateway by a veth pair.
//!
//! Two deployment modes, with the same zones and conduits:
//! - [`Mode::Routed`]: one subnet per zone (a Linux bridge per zone on the gateway, which has
//!   an address on it and routes between them); the agent attaches to the gateway's veths.
//! - [`Mode::Bridge`]: "bump in the wire": every host on one flat subnet, the gateway puts all
//!   its veths into one bridge without any address; the agent attaches to the bridge ports.
//!
//! Every name is unique ([`unique_name`]), and everything lives in the namespaces the plant
//! created, so dropping the plant (also during a panic) removes all of it.
use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, Output, Stdio},
    time::Duration,
};

use crate::{Netns, ip, unique_name};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One subnet per zone; the gateway routes between them.
    Routed,
    /// One subnet; the gateway bridges (the agent on the bridge ports).
    Bridge,
}

/// A host of the plant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Enterprise workstation (zone `enterprise`, by CIDR).
    Office,
    /// DMZ historian (zone `dmz`, MAC-bound).
    Historian,
    /// Supervisory HMI (zone `supervisory`, MAC-bound).
    Hmi,
    /// Supervisory engineering workstation (zone `supervisory`, MAC-bound).
    EngWs,
    /// Control PLC 1 (zone `control`, MAC-bound).
    Plc1,
    /// Control PLC 2 (zone `control`, MAC-bound).
    Plc2,
    /// A host on a gateway port whose address is in no zone (`unknown`).
    Outsider,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Office,
        Role::Historian,
        Role::Hmi,
        Role::EngWs,
        Role::Plc1,
        Role::Plc2,
        Role::Outsider,
    ];

    /// The asset's name in the policy (`None`: the host is not an asset).
    pub fn asset(self) -> Option<&'static str> {
        match self {
            Role::Office => None,
            Role::Historian => Some("historian"),
            Role::Hmi => Some("hmi-1"),
            Role::EngWs => Some("eng-ws"),
            Role::Plc1 => Some("plc-1"),
            Role::Plc2 => Some("plc-2"),
            Role::Outsider => None,
        }
    }

    /// The zone the agent should resolve the host's address to.
    pub fn zone(self) -> &'static str {
        match self {
            Role::Office => "enterprise",
            Role::Historian => "dmz",
            Role::Hmi | Role::EngWs => "supervisory",
            Role::Plc1 | Role::Plc2 => "control",
            Role::Outsider => "unknown",
        }
    }

    /// The segment number (one per zone; also the third octet of the flat subnet).
    fn segment(self) -> u8 {
        match self {
            Role::Office => 4,
            Role::Historian => 5,
            Role::Hmi | Role::EngWs => 3,
            Role::Plc1 | Role::Plc2 => 2,
            Role::Outsider => 66,
        }
    }

    fn host_octet(self) -> u8 {
        match self {
            Role::Office => 50,
            Role::Historian => 10,
            Role::Hmi => 20,
            Role::EngWs => 30,
            Role::Plc1 => 10,
            Role::Plc2 => 11,
            Role::Outsider => 6,
        }
    }

    fn ns_prefix(self) -> &'static str {
        match self {
            Role::Office => "cpof",
            Role::Historian => "cphi",
            Role::Hmi => "cphm",
            Role::EngWs => "cpew",
            Role::Plc1 => "cpp1",
            Role::Plc2 => "cpp2",
            Role::Outsider => "cpou",
        }
    }
}

/// The address of host number `octet` of `segment` in `mode` (routed: 10.SEG.0.N/24; bridge:
/// one flat 10.9.0.0/16, where the segment is only the third octet).
pub fn address(mode: Mode, segment: u8, octet: u8) -> String {
    match mode {
        Mode::Routed => format!("10.{segment}.0.{octet}"),
        Mode::Bridge => format!("10.9.{segment}.{octet}"),
    }
}

fn prefix_len(mode: Mode) -> u8 {
    match mode {
        Mode::Routed => 24,
        Mode::Bridge => 16,
    }
}

/// The static MAC of host `octet` of `segment` (the gateway's own, in routed mode: octet 1).
fn mac(segment: u8, octet: u8) -> String {
    format!("02:00:00:{segment:02}:00:{octet:02}")
}

pub struct Host {
    pub role: Role,
    pub ns: Netns,
    /// IPv4 address, without prefix.
    pub ip: String,
    pub mac: String,
    /// The host's end of its veth (inside `ns`).
    pub dev: String,
    /// The gateway's end (inside the gateway namespace): a port the agent attaches to.
    pub port: String,
}

/// A bridge of the gateway; in routed mode with the gateway's address on the segment.
pub struct Segment {
    pub segment: u8,
    pub bridge: String,
    pub gw_ip: Option<String>,
    pub gw_mac: String,
}

pub struct Plant {
    pub mode: Mode,
    /// Dropped first (deleting each host's namespace and its veth pair), then the gateway.
    pub hosts: Vec<Host>,
    pub segments: Vec<Segment>,
    pub gw: Netns,
}

/// No IPv6 in the plant: keeps router solicitations and the like out of counters and logs.
fn ipv4_only(ns: &Netns) {
    ns.exec_ok(&[
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]);
}

impl Plant {
    pub fn new(mode: Mode) -> Self {
        let gw = Netns::new("cpgw");
        ipv4_only(&gw);
        let mut plant = Plant {
            mode,
            hosts: Vec::new(),
            segments: Vec::new(),
            gw,
        };
        let gwn = plant.gw.name.clone();
        match mode {
            Mode::Routed => {
                plant
                    .gw
                    .exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
                for role in Role::ALL {
                    let seg = role.segment();
                    if plant.segments.iter().any(|s| s.segment == seg) {
                        continue;
                    }
                    let bridge = unique_name("cpbr");
                    let gw_ip = address(mode, seg, 1);
                    let gw_mac = mac(seg, 1);
                    ip(&["-n", &gwn, "link", "add", &bridge, "type", "bridge"]);
                    ip(&["-n", &gwn, "link", "set", &bridge, "address", &gw_mac]);
                    let cidr = format!("{gw_ip}/{}", prefix_len(mode));
                    ip(&["-n", &gwn, "addr", "add", &cidr, "dev", &bridge]);
                    ip(&["-n", &gwn, "link", "set", &bridge, "up"]);
                    plant.segments.push(Segment {
                        segment: seg,
                        bridge,
                        gw_ip: Some(gw_ip),
                        gw_mac,
                    });
                }
            }
            Mode::Bridge => {
                let bridge = unique_name("cpbr");
                ip(&["-n", &gwn, "link", "add", &bridge, "type", "bridge"]);
                ip(&["-n", &gwn, "link", "set", &bridge, "up"]);
                plant.segments.push(Segment {
                    segment: 0,
                    bridge,
                    gw_ip: None,
                    gw_mac: String::new(),
                });
            }
        }
        for role in Role::ALL {
            let ns = Netns::new(role.ns_prefix());
            let dev = unique_name("cpv");
            let port = unique_name("cpg");
            let host = Host {
                role,
                ip: address(mode, role.segment(), role.host_octet()),
                mac: mac(role.segment(), role.host_octet()),
                ns,
                dev,
                port,
            };
            // Owned by the plant from here on: removed on drop whatever happens next.
            plant.hosts.push(host);
            let h = plant.hosts.last().unwrap();
            ipv4_only(&h.ns);
            ip(&[
                "link", "add", &h.dev, "netns", &h.ns.name, "type", "veth", "peer", "name",
                &h.port, "netns", &gwn,
            ]);
            let n = &h.ns.name;
            ip(&["-n", n, "link", "set", &h.dev, "address", &h.mac]);
            let cidr = format!("{}/{}", h.ip, prefix_len(mode));
            ip(&["-n", n, "addr", "add", &cidr, "dev", &h.dev]);
            ip(&["-n", n, "link", "set", &h.dev, "up"]);
            let seg = plant.segment_of(role);
            if let Some(gw_ip) = &seg.gw_ip {
                ip(&["-n", n, "route", "add", "default", "via", gw_ip]);
            }
            ip(&["-n", &gwn, "link", "set", &h.port, "master", &seg.bridge]);
            ip(&["-n", &gwn, "link", "set", &h.port, "up"]);
        }
        plant
    }

    pub fn host(&self, role: Role) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .expect("every role has a host")
    }

    pub fn ns(&self, role: Role) -> &Netns {
        &self.host(role).ns
    }

    pub fn ip(&self, role: Role) -> &str {
        &self.host(role).ip
    }

    /// The bridge a host's gateway port is enslaved to.
    pub fn segment_of(&self, role: Role) -> &Segment {
        match self.mode {
            Mode::Routed => self
                .segments
                .iter()
                .find(|s| s.segment == role.segment())
                .expect("a segment per zone"),
            Mode::Bridge => &self.segments[0],
        }
    }

    /// The gateway's ports (the veths in the gateway namespace): where the agent attaches.
    pub fn ports(&self) -> Vec<&str> {
        self.hosts.iter().map(|h| h.port.as_str()).collect()
    }

    /// An address on `role`'s segment that no host and no asset uses.
    pub fn unused_ip(&self, role: Role) -> String {
        address(self.mode, role.segment(), 99)
    }

    /// The destination MAC of a frame that `from` sends towards `to`: the gateway's bridge
    /// (routed) or `to` itself (bridge).
    pub fn next_hop_mac(&self, from: Role, to: Role) -> String {
        match self.mode {
            Mode::Routed => self.segment_of(from).gw_mac.clone(),
            Mode::Bridge => self.host(to).mac.clone(),
        }
    }

    /// Who resolves `target`'s address by ARP when `client` talks to it: (namespace, IP, MAC)
    /// of the gateway on `target`'s segment (routed), or of `client` itself (bridge).
    pub fn arp_neighbour(&self, target: Role, client: Role) -> (&Netns, String, String) {
        match self.mode {
            Mode::Routed => {
                let s = self.segment_of(target);
                (&self.gw, s.gw_ip.clone().unwrap(), s.gw_mac.clone())
            }
            Mode::Bridge => {
                let h = self.host(client);
                (&h.ns, h.ip.clone(), h.mac.clone())
            }
        }
    }

    /// The policy of the plant, for the addresses of its mode: four zones (the control zone
    /// with `intra_zone: deny`), MAC bindings for every asset of the DMZ, supervisory and
    /// control zones, and four conduits. The outsider is in no zone.
    pub fn policy_yaml(&self) -> String {
        let asset = |r: Role| {
            let h = self.host(r);
            format!(
                "      - {{ name: {}, ip: {}, mac: \"{}\" }}\n",
                r.asset().unwrap(),
                h.ip,
                h.mac
            )
        };
        let office_lan = format!("{}/24", address(self.mode, Role::Office.segment(), 0));
        // Anti-spoofing: the routed gateway checks sources against its routing table (the
        // zones' bridges); the transparent bridge cannot, so each zone lists its ports.
        let ifaces = |roles: &[Role]| match self.mode {
            Mode::Routed => String::new(),
            Mode::Bridge => format!(
                "    interfaces: [{}]\n",
                roles
                    .iter()
                    .map(|r| self.host(*r).port.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let site = match self.mode {
            Mode::Routed => "plant-routed",
            Mode::Bridge => "plant-bridge",
        };
        format!(
            "version: 1
site: {site}
defaults:
  mode: enforce
  intra_zone: allow
  fragments: deny
  log: deny
  failsafe:
    - {{ proto: tcp, ports: [22] }}
  l2:
    default: deny
    allow_ethertypes: [lldp]
zones:
  - name: enterprise
    security_level: 1
{if_enterprise}    assets:
      - {{ name: office-lan, cidr: {office_lan} }}
  - name: dmz
    security_level: 2
{if_dmz}    assets:
{historian}  - name: supervisory
    security_level: 3
{if_supervisory}    assets:
{hmi}{engws}  - name: control
    security_level: 3
    intra_zone: deny
{if_control}    assets:
{plc1}{plc2}conduits:
  - name: office-to-historian
    from: enterprise
    to: dmz
    destinations: [historian]
    rules:
      - {{ proto: tcp, ports: [443] }}
      - {{ proto: icmp, icmp_types: [echo-request] }}
  - name: historian-collect
    from: dmz
    to: supervisory
    sources: [historian]
    destinations: [hmi-1]
    rules:
      - {{ proto: tcp, ports: [4840] }}
  - name: hmi-to-plc
    from: supervisory
    to: control
    security_level: 3
    sources: [hmi-1]
    rules:
      - {{ proto: tcp, ports: [502], modbus: {{ functions: [read] }} }}
      - {{ proto: udp, ports: [161] }}
      - {{ proto: icmp, icmp_types: [echo-request] }}
    log: all
  - name: engineering
    from: supervisory
    to: control
    security_level: 3
    sources: [eng-ws]
    destinations: [plc-1]
    rules:
      - {{ proto: tcp, ports: [102, 44818] }}
",
            if_enterprise = ifaces(&[Role::Office]),
            if_dmz = ifaces(&[Role::Historian]),
            if_supervisory = ifaces(&[Role::Hmi, Role::EngWs]),
            if_control = ifaces(&[Role::Plc1, Role::Plc2]),
            historian = asset(Role::Historian),
            hmi = asset(Role::Hmi),
            engws = asset(Role::EngWs),
            plc1 = asset(Role::Plc1),
            plc2 = asset(Role::Plc2),
        )
    }

    /// Starts network services on a host: Modbus/TCP servers (pymodbus) on `modbus` ports
    /// whose holding registers start with `registers` (address 0), plain TCP listeners on
    /// `tcp` ports and UDP echo servers (they answer `echo:` + the datagram) on `udp` ports.
    /// Returns once every socket listens; stopped when the guard is dropped.
    pub fn serve(
        &self,
        role: Role,
        modbus: &[u16],
        tcp: &[u16],
        udp: &[u16],
        registers: &[u16],
    ) -> Services {
        let list = |v: &[u16]| {
            v.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut child = self
            .ns(role)
            .command(PYTHON)
            .arg("-c")
            .arg(format!("{PYMODBUS_STUB}{SERVICES_PY}"))
            .args([list(modbus), list(tcp), list(udp), list(registers)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the services (python3)");
        let stdout = child.stdout.take().unwrap();
        Services {
            child,
            stdout: Some(stdout),
            role,
        }
    }

    /// Runs `argv` in a host's namespace and returns its output (any exit status).
    pub fn run(&self, role: Role, argv: &[&str]) -> Output {
        self.ns(role)
            .command(argv[0])
            .args(&argv[1..])
            .output()
            .expect("spawn")
    }

    /// Pings `to` from `from` (`count` echo requests, 200 ms apart); true when all answered.
    pub fn ping(&self, from: Role, to: &str, count: u32) -> bool {
        let out = self.run(
            from,
            &["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "1", to],
        );
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(" 0% packet loss")
    }

    /// Whether a TCP connection from `from` to `to:port` succeeds (1 s timeout), for each of
    /// `ports`, all tried at once.
    pub fn tcp_connects(&self, from: Role, to: &str, ports: &[u16]) -> Vec<bool> {
        let children: Vec<Child> = ports
            .iter()
            .map(|p| {
                self.ns(from)
                    .command("nc")
                    .args(["-z", "-w", "1", to, &p.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("nc (netcat-openbsd)")
            })
            .collect();
        children
            .into_iter()
            .map(|mut c| c.wait().is_ok_and(|s| s.success()))
            .collect()
    }

    /// Sends one UDP datagram from `from` to `to:port` and returns the answer (1 s timeout).
    pub fn udp_exchange(&self, from: Role, to: &str, port: u16, payload: &str) -> Option<String> {
        let out = self.run(
            from,
            &[PYTHON, "-c", UDP_CLIENT_PY, to, &port.to_string(), payload],
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Reads `count` holding registers from address 0 of the Modbus/TCP server at `to:port`
    /// with pymodbus' client (1 s timeout, no retries), from `from`. `Err` with the client's
    /// output when it cannot connect or gets no valid answer.
    pub fn modbus_read(
        &self,
        from: Role,
        to: &str,
        port: u16,
        count: u16,
    ) -> Result<Vec<u16>, String> {
        let script = format!("{PYMODBUS_STUB}{MODBUS_CLIENT_PY}");
        let out = self.run(
            from,
            &[
                PYTHON,
                "-c",
                &script,
                to,
                &port.to_string(),
                &count.to_string(),
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() {
            return Err(format!(
                "{stdout} {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        stdout
            .split(',')
            .map(|v| v.parse().map_err(|e| format!("{stdout:?}: {e}")))
            .collect()
    }

    /// Sends hand-made frames with scapy from `role`'s interface: `frames` is a Python
    /// expression (a packet or a list of packets) in which `IFACE` may be used; each is sent
    /// `count` times.
    pub fn scapy_send(&self, role: Role, frames: &str, count: u32) {
        let h = self.host(role);
        let script = format!(
            "from scapy.all import *\nconf.verb = 0\nIFACE = '{}'\nsendp({frames}, iface=IFACE, count={count})\n",
            h.dev
        );
        let out = self.run(role, &[PYTHON, "-c", &script]);
        assert!(
            out.status.success(),
            "scapy in {:?}: {}{}",
            role,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip neigh show ADDR` in a namespace.
    pub fn neigh(ns: &Netns, addr: &str) -> String {
        ns.exec_ok(&["ip", "neigh", "show", addr])
    }

    /// Captures what arrives on (or leaves) `role`'s interface that matches a tcpdump `filter`,
    /// from now until [`Capture::stop`].
    pub fn capture(&self, role: Role, filter: &str) -> Capture {
        let h = self.host(role);
        let mut child =
            h.ns.command("tcpdump")
                .args(["-n", "-l", "-i", &h.dev, filter])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("tcpdump");
        // tcpdump says "listening on ..." on stderr once the capture is live.
        crate::capture::wait_until_capturing(&mut child);
        Capture { child: Some(child) }
    }
}

/// Network services started by [`Plant::serve`]; stopped on drop.
pub struct Services {
    child: Child,
    stdout: Option<std::process::ChildStdout>,
    role: Role,
}

impl Services {
    /// Waits until every socket listens.
    pub fn ready(mut self) -> Self {
        let mut line = String::new();
        let n = BufReader::new(self.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap_or(0);
        if n == 0 || !line.contains("ready") {
            let mut err = String::new();
            let _ = self.child.kill();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the services on {:?} did not start: {line}{err}", self.role);
        }
        self
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        crate::signal(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A running tcpdump ([`Plant::capture`]).
pub struct Capture {
    child: Option<Child>,
}

impl Capture {
    /// Stops the capture and returns the lines it printed (one per packet).
    pub fn stop(mut self) -> Vec<String> {
        let child = self.child.take().unwrap();
        // Frames the caller just sent may still be on their way through the namespaces: no
        // condition says when the last one has reached tcpdump, so a moment's grace.
        std::thread::sleep(Duration::from_millis(200));
        crate::signal(child.id(), libc::SIGINT);
        let out = child.wait_with_output().expect("tcpdump output");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Debian's python3 with python3-pymodbus and python3-scapy (the `python3` first on PATH may
/// be another one).
pub const PYTHON: &str = "/usr/bin/python3";

/// python3-pymodbus 3.0 imports pyserial even for TCP, which Debian installs only as a
/// Recommends; stand-ins let the TCP client and server import without it.
const PYMODBUS_STUB: &str = r#"
import sys, types
for _name in ("serial", "serial_asyncio"):
    try:
        __import__(_name)
    except ImportError:
        _m = types.ModuleType(_name)
        _m.__getattr__ = lambda attr: type(attr, (), {})
        sys.modules[_name] = _m
"#;

const SERVICES_PY: &str = r#"
import asyncio, sys
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import StartAsyncTcpServer

def ports(i):
    return [int(p) for p in sys.argv[i].split(",") if p]

MODBUS, TCP, UDP, REGS = ports(1), ports(2), ports(3), ports(4)

class Echo(asyncio.DatagramProtocol):
    def connection_made(self, t):
        self.t = t
    def datagram_received(self, data, addr):
        self.t.sendto(b"echo:" + data, addr)

async def plain(reader, writer):
    writer.close()

async def main():
    store = ModbusSlaveContext(hr=ModbusSequentialDataBlock(0, REGS + [0] * 16), zero_mode=True)
    ctx = ModbusServerContext(slaves=store, single=True)
    loop = asyncio.get_running_loop()
    servers = []
    for p in MODBUS:
        servers.append(await StartAsyncTcpServer(context=ctx, address=("0.0.0.0", p), defer_start=True))
    for p in TCP:
        await asyncio.start_server(plain, "0.0.0.0", p)
    for p in UDP:
        await loop.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", p))
    tasks = [asyncio.create_task(s.serve_forever()) for s in servers]
    await asyncio.sleep(0.2)
    print("ready", flush=True)
    await asyncio.gather(*tasks, loop.create_future())

asyncio.run(main())
"#;

const MODBUS_CLIENT_PY: &str = r#"
from pymodbus.client import ModbusTcpClient
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = ModbusTcpClient(host, port=port, timeout=1, retries=0)
if not c.connect():
    print("connect failed")
    sys.exit(1)
rr = c.read_holding_registers(0, count, slave=1)
c.close()
if rr.isError():
    print("modbus error", rr)
    sys.exit(2)
print(",".join(str(v) for v in rr.registers))
"#;

const UDP_CLIENT_PY: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
print(s.recvfrom(1000)[0].decode())
"#;

/// A sample of a Prometheus exposition: name, labels (name, value) and value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// One scrape of `/metrics`: every sample with its labels.
#[derive(Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(body: &str) -> Self {
        let mut samples = Vec::new();
        for l in body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let Some((sample, value)) = l.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match sample.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split("\",")
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once("=\"")?;
                            Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (sample.to_owned(), Vec::new()),
            };
            samples.push((name, labels, value));
        }
        Self { samples }
    }

    /// The sum of every sample of `name` that has (at least) the labels `with`.
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }
}
