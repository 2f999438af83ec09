//! Interfaces that go away and come back. An XDP link belongs to one device: when an enforced
//! interface is deleted (a USB NIC unplugged, a VLAN interface recreated by networkd, a
//! container's veth) the kernel detaches the program and the pinned link is left defunct; the
//! device that later appears under the same name is a new one, with no program. The agent
//! hears of it from the kernel's link notifications (rtnetlink, RTNLGRP_LINK): no polling.
//!
//! On every link event the agent compares, for each enforced interface, the device now
//! carrying its name with the device its pinned link is attached to, and
//! - the name is gone: marks the interface detached (`conduit_interface_attached` 0,
//!   `/healthz` 503, `missing` in `conduit status`) and removes the defunct link's pin;
//! - a device has the name but the pinned link is not on it (none, defunct, or on another
//!   device after a rename): attaches the program with a new link, pinned in place of the
//!   stale one, and marks it attached.
//!
//! Comparing states rather than replaying events makes a lost notification (a full socket
//! buffer: ENOBUFS) harmless: the next check repairs it, and an overrun forces one.
use std::{
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use conduit_common::{
    FAMILY_V4, INGRESS_NO_FIB, IngressCfg,
    verdict::{Fib, Packet, Route},
};
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::io::{Interest, unix::AsyncFd};
use tracing::{debug, error, info, warn};

use super::{Shared, host, links, state};
use crate::{agent::Config, datapath::Datapath};

/// A link notification: RTM_NEWLINK (created or changed) or RTM_DELLINK; an address
/// added or removed (RTM_NEWADDR, RTM_DELADDR) comes as a change of its link, unnamed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEvent {
    pub deleted: bool,
    pub index: u32,
    pub name: Option<String>,
    /// An address of the interface came or went (not the link itself).
    pub address: bool,
}

/// A socket subscribed to the kernel's link notifications (RTNLGRP_LINK) of the agent's
/// network namespace.
pub struct LinkEvents {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
}

/// Large enough for any link message (a NIC with many VFs sends a few KiB).
const BUF: usize = 64 * 1024;

impl LinkEvents {
    pub fn subscribe() -> io::Result<Self> {
        let mut s = Socket::new(NETLINK_ROUTE)?;
        // Addresses too: a bridge given an address becomes a routed interface (see
        // `ingress_of`).
        let groups = libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR;
        s.bind(&SocketAddr::new(0, groups as u32))?;
        s.set_non_blocking(true)?;
        // Room for bursts (a bridge with many ports going away at once); a lost
        // notification is repaired anyway (ENOBUFS forces a full check).
        let _ = s.set_rx_buf_sz(1 << 20);
        // SAFETY: the socket owns its fd, which stays open and unchanged for as long as the
        // AsyncFd (which owns the socket) lives.
        let fd = unsafe { AsyncFd::register_with_interest(s, Interest::READABLE) }?;
        Ok(Self {
            fd,
            buf: Vec::with_capacity(BUF),
        })
    }

    /// The next datagram's link events. `Ok(None)`: notifications were lost or could not be
    /// read whole (overrun, truncated, undecodable), so every interface must be checked.
    pub async fn next(&mut self) -> io::Result<Option<Vec<LinkEvent>>> {
        let Self { fd, buf } = self;
        loop {
            let mut guard = fd.readable().await?;
            buf.clear();
            match guard.try_io(|s| s.get_ref().recv(buf, libc::MSG_TRUNC)) {
                Ok(Ok(n)) if n > buf.len() => return Ok(None),
                Ok(Ok(_)) => return Ok(parse(buf)),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(None),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The link events in one netlink datagram (several messages may share it); `None` if it
/// cannot be decoded.
pub fn parse(mut buf: &[u8]) -> Option<Vec<LinkEvent>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let len = u32::from_ne_bytes(buf.get(..4)?.try_into().ok()?) as usize;
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf.get(..len)?).ok()?;
        // Messages are 4-byte aligned (NLMSG_ALIGN); a length of 0 did not deserialize.
        buf = buf.get(len.next_multiple_of(4).min(buf.len())..)?;
        let (deleted, m) = match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => (false, m),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => (true, m),
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a),
            ) => {
                // An address came or went: not a link event, but the check runs on it.
                out.push(LinkEvent {
                    deleted: false,
                    index: a.header.index,
                    name: None,
                    address: true,
                });
                continue;
            }
            _ => continue,
        };
        out.push(LinkEvent {
            deleted,
            index: m.header.index,
            name: m.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n),
                _ => None,
            }),
            address: false,
        });
    }
    Some(out)
}

/// Sends one rtnetlink request and returns the messages of its answer (up to NLMSG_DONE
/// for a dump); an error answer is an `Err`.
fn request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = flags;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    s.send(&buf, 0)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("rtnetlink: {what}"));
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut out = Vec::new();
    let mut rx = Vec::with_capacity(BUF);
    loop {
        rx.clear();
        s.recv(&mut rx, 0)?;
        let mut at = &rx[..];
        while !at.is_empty() {
            let len = at
                .get(..4)
                .map(|b| u32::from_ne_bytes(b.try_into().unwrap_or_default()) as usize)
                .ok_or_else(|| bad("short message"))?;
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(
                at.get(..len).ok_or_else(|| bad("cut message"))?,
            )
            .map_err(|e| bad(&e.to_string()))?;
            at = at
                .get(len.next_multiple_of(4).min(at.len())..)
                .unwrap_or_default();
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(match e.code {
                        Some(c) => io::Error::from_raw_os_error(-c.get()),
                        None => bad("error without a code"),
                    });
                }
                NetlinkPayload::InnerMessage(m) => {
                    out.push(m);
                    if !dump {
                        return Ok(out);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The host's routing table asked as the kernel program's reverse-path check asks it
/// (`bpf_fib_lookup`): over rtnetlink, like `ip route get SOURCE`; the interface's
/// `forwarding` sysctl for [`Route::NotRouting`]. For `explain --in` and the tests that hold
/// the kernel program to the reference. (Policy routing by input interface or source, which
/// `bpf_fib_lookup` sees, is not asked here.)
pub struct HostFib;

impl Fib for HostFib {
    fn reverse(&self, p: &Packet) -> Route {
        let v4 = p.family == FAMILY_V4;
        {
            let name = super::host::ifname(p.ifindex);
            let path = format!(
                "/proc/sys/net/{}/conf/{name}/forwarding",
                if v4 { "ipv4" } else { "ipv6" }
            );
            if std::fs::read_to_string(path).is_ok_and(|s| s.trim() == "0") {
                return Route::NotRouting;
            }
        }
        let mut m = RouteMessage::default();
        let src = if v4 {
            m.header.address_family = AddressFamily::Inet;
            m.header.destination_prefix_length = 32;
            RouteAddress::Inet(std::net::Ipv4Addr::new(
                p.src[0], p.src[1], p.src[2], p.src[3],
            ))
        } else {
            m.header.address_family = AddressFamily::Inet6;
            m.header.destination_prefix_length = 128;
            RouteAddress::Inet6(std::net::Ipv6Addr::from(p.src))
        };
        m.attributes.push(RouteAttribute::Destination(src));
        let Ok(answer) = request(RouteNetlinkMessage::GetRoute(m), NLM_F_REQUEST) else {
            // No route (ENETUNREACH and the like).
            return Route::None;
        };
        let Some(RouteNetlinkMessage::NewRoute(r)) = answer.into_iter().next() else {
            return Route::None;
        };
        if r.header.kind != RouteType::Unicast {
            return Route::None;
        }
        r.attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(Route::Via(*i)),
                _ => None,
            })
            .unwrap_or(Route::None)
    }
}

/// One link of the agent's network namespace, as a link dump gives it.
#[derive(Clone, Debug)]
struct Link {
    index: u32,
    name: String,
    /// The device this one is enslaved to (IFLA_MASTER): a bridge, bond or VRF.
    controller: Option<u32>,
    /// The device this one is stacked on (IFLA_LINK): a VLAN's or macvlan's parent.
    parent: Option<u32>,
    kind: Option<InfoKind>,
}

/// Every link of the agent's network namespace (RTM_GETLINK dump).
fn dump_links() -> io::Result<Vec<Link>> {
    let answer = request(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_REQUEST | NLM_F_DUMP,
    )?;
    let mut out = Vec::new();
    for m in answer {
        let RouteNetlinkMessage::NewLink(m) = m else {
            continue;
        };
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            controller: None,
            parent: None,
            kind: None,
        };
        for a in m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::Controller(c) => l.controller = Some(c),
                LinkAttribute::Link(p) => l.parent = Some(p),
                LinkAttribute::LinkInfo(infos) => {
                    l.kind = infos.into_iter().find_map(|i| match i {
                        LinkInfo::Kind(k) => Some(k),
                        _ => None,
                    })
                }
                _ => {}
            }
        }
        out.push(l);
    }
    Ok(out)
}

/// What the kernel program must know of the enforced interface `iface` (see
/// [`IngressCfg`]), and, when the kernel's FIB cannot tell which sources belong behind it,
/// why (the reverse-path check is then off there; zones' `interfaces` still apply).
pub fn ingress_cfg(iface: &str, ifindex: u32) -> io::Result<(IngressCfg, Option<String>)> {
    let links = dump_links()?;
    Ok(ingress_of(&links, iface, ifindex))
}

fn ingress_of(links: &[Link], iface: &str, ifindex: u32) -> (IngressCfg, Option<String>) {
    let mut cfg = IngressCfg {
        flags: 0,
        fib_ifindex: ifindex,
        name: crate::policy::compile::ifname(iface),
    };
    let me = links.iter().find(|l| l.index == ifindex);
    let controller = me
        .and_then(|m| m.controller)
        .and_then(|c| links.iter().find(|l| l.index == c));
    let mut why = None;
    if let Some(c) = controller {
        match &c.kind {
            // A VRF's ports are routed ports: the FIB answers with the port itself.
            Some(InfoKind::Vrf) => {}
            // Routes through a bond name the bond.
            Some(InfoKind::Bond) => cfg.fib_ifindex = c.index,
            // A bridge with an address is the routed interface of its segment (a zone's
            // bridge on a routed gateway): a source must be routed back through the
            // bridge its port belongs to. Which port within the bridge is the zones'
            // `interfaces`' to say.
            Some(InfoKind::Bridge) if super::host::has_routed_address(&c.name) => {
                cfg.fib_ifindex = c.index
            }
            kind => {
                cfg.flags |= INGRESS_NO_FIB;
                why = Some(format!(
                    "it is a port of {} ({}): the routing table names {} and cannot tell which port a source is behind",
                    c.name,
                    kind.as_ref()
                        .map_or("?".into(), |k| format!("{k:?}").to_lowercase()),
                    c.name
                ));
            }
        }
    }
    let stacked = links.iter().find(|l| {
        l.parent == Some(ifindex)
            && l.index != ifindex
            && matches!(
                l.kind,
                Some(
                    InfoKind::Vlan
                        | InfoKind::MacVlan
                        | InfoKind::MacVtap
                        | InfoKind::IpVlan
                        | InfoKind::IpVtap
                )
            )
    });
    if let Some(u) = stacked {
        cfg.flags |= INGRESS_NO_FIB;
        why = Some(format!(
            "{} is stacked on it: frames of several interfaces arrive on it",
            u.name
        ));
    }
    (cfg, why)
}

/// Follows link events for the agent's lifetime: checks every enforced interface at once
/// (anything that happened between the attach and the subscription), then after each
/// notification.
pub async fn watch(
    mut events: LinkEvents,
    dp: Arc<Mutex<Datapath>>,
    shared: Arc<Mutex<Shared>>,
    args: Config,
    addresses: Arc<tokio::sync::Notify>,
) {
    // Off the runtime thread: the datapath may be held by a reload for a while.
    let run_check = || {
        let (dp, shared, args) = (dp.clone(), shared.clone(), args.clone());
        async move {
            if let Err(e) = tokio::task::spawn_blocking(move || check(&dp, &shared, &args)).await {
                error!("checking the enforced interfaces: {e}");
            }
        }
    };
    run_check().await;
    loop {
        match events.next().await {
            Ok(Some(evs)) => {
                for e in &evs {
                    debug!(deleted = e.deleted, ifindex = e.index, name = ?e.name, "link event");
                }
                if evs.iter().any(|e| e.address) {
                    addresses.notify_one();
                }
                if !evs.is_empty() {
                    run_check().await;
                }
            }
            Ok(None) => {
                warn!("link notifications were lost or unreadable: checking every interface");
                addresses.notify_one();
                run_check().await;
            }
            Err(e) => {
                error!("reading link notifications: {e}; subscribing again");
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match LinkEvents::subscribe() {
                        Ok(ev) => break events = ev,
                        Err(e) => error!("subscribing to link notifications: {e}"),
                    }
                }
                run_check().await;
            }
        }
    }
}

/// Brings every enforced interface's link in line with the device now carrying its name.
pub fn check(dp: &Mutex<Datapath>, shared: &Mutex<Shared>, args: &Config) {
    for iface in &args.ifaces {
        let now = host::ifindex(iface);
        let linked = match links::pinned_ifindex(&args.pin_dir, iface) {
            Ok(l) => l,
            Err(e) => {
                warn!(interface = %iface, "reading the pinned link: {e}");
                Some(0)
            }
        };
        if let Some(ifindex) = now
            && now == linked
        {
            refresh_ingress(dp, iface, ifindex);
            continue;
        }
        // The reloader's lock order: the datapath, then the shared state.
        let Ok(mut dp) = dp.lock() else { return };
        let Ok(mut s) = shared.lock() else { return };
        match now {
            None => gone(&mut s, args, iface, linked),
            Some(ifindex) => back(&mut dp, &mut s, args, iface, ifindex),
        }
    }
}

/// Keeps what the kernel program knows of an enforced interface current: a port enslaved
/// to a bridge after the agent started, or given a VLAN, must not be checked against the
/// routing table any more (and the other way round).
fn refresh_ingress(dp: &Mutex<Datapath>, iface: &str, ifindex: u32) {
    let (cfg, why) = match ingress_cfg(iface, ifindex) {
        Ok(c) => c,
        Err(e) => {
            warn!(interface = %iface, "reading the interface's links: {e}");
            return;
        }
    };
    let Ok(mut dp) = dp.lock() else { return };
    match dp.set_ingress(ifindex, &cfg) {
        Ok(true) => match why {
            Some(why) => {
                warn!(interface = %iface, "no reverse-path check on {iface} any more: {why}; list it in the `interfaces` of the zones behind it")
            }
            None => info!(interface = %iface, "the reverse-path check applies on {iface} again"),
        },
        Ok(false) => {}
        Err(e) => error!(interface = %iface, "updating the interface's entry: {e}"),
    }
}

fn gone(s: &mut Shared, args: &Config, iface: &str, linked: Option<u32>) {
    if linked.is_some()
        && let Err(e) = links::unpin(&args.pin_dir, iface)
    {
        warn!(interface = %iface, "removing the defunct link's pin: {e}");
    }
    if set_attached(s, iface, None) {
        warn!(interface = %iface, "the enforced interface is gone: nothing is enforced on it until it returns; its defunct link was unpinned");
        write_state(s, args);
    }
}

fn back(dp: &mut Datapath, s: &mut Shared, args: &Config, iface: &str, ifindex: u32) {
    match links::attach(dp, &args.pin_dir, iface, args.xdp_mode, None) {
        Ok((mode, _)) => {
            set_attached(s, iface, Some(mode.clone()));
            info!(interface = %iface, ifindex, %mode, "the interface is back: program re-attached");
            write_state(s, args);
        }
        Err(e) => {
            // It stays reported missing; the next link event tries again.
            set_attached(s, iface, None);
            error!(interface = %iface, ifindex, "re-attaching: {e}; not enforced");
            write_state(s, args);
        }
    }
}

/// Records the interface as attached in `mode` (`Some`) or missing (`None`); returns whether
/// it was attached before.
fn set_attached(s: &mut Shared, iface: &str, mode: Option<String>) -> bool {
    let mut was = false;
    if let Some(e) = s.ifaces.iter_mut().find(|e| e.0 == iface) {
        was = e.2;
        e.2 = mode.is_some();
        if let Some(m) = &mode {
            e.1.clone_from(m);
        }
    }
    if let Some(e) = s.state.interfaces.iter_mut().find(|e| e.name == iface) {
        e.missing = mode.is_none();
        if let Some(m) = mode {
            e.mode = m;
        }
    }
    was
}

fn write_state(s: &Shared, args: &Config) {
    if let Err(e) = state::write(&args.state_dir, &s.state) {
        warn!("writing the state file: {e}");
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::{
        RouteNetlinkMessage,
        link::{LinkAttribute, LinkMessage},
    };

    use super::{LinkEvent, parse};

    fn message(deleted: bool, index: u32, name: &str) -> Vec<u8> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        let inner = if deleted {
            RouteNetlinkMessage::DelLink(m)
        } else {
            RouteNetlinkMessage::NewLink(m)
        };
        let mut msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(inner));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    #[test]
    fn link_messages_give_name_and_index() {
        // Two messages in one datagram, as the kernel may send them.
        let mut d = message(true, 7, "eth1");
        d.extend(message(false, 9, "eth1"));
        assert_eq!(
            parse(&d),
            Some(vec![
                LinkEvent {
                    deleted: true,
                    index: 7,
                    name: Some("eth1".into()),
                    address: false,
                },
                LinkEvent {
                    deleted: false,
                    index: 9,
                    name: Some("eth1".into()),
                    address: false,
                },
            ])
        );
    }

    #[test]
    fn a_cut_datagram_is_not_decoded() {
        let d = message(false, 9, "eth1");
        assert_eq!(parse(&d[..d.len() - 3]), None);
        assert_eq!(parse(&[]), Some(vec![]));
    }
}
