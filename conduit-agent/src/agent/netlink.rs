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

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{RouteNetlinkMessage, link::LinkAttribute};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::io::{Interest, unix::AsyncFd};
use tracing::{debug, error, info, warn};

use super::{Shared, host, links, state};
use crate::{cli::RunArgs, datapath::Datapath};

/// A link notification: RTM_NEWLINK (created or changed) or RTM_DELLINK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEvent {
    pub deleted: bool,
    pub index: u32,
    pub name: Option<String>,
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
        s.bind(&SocketAddr::new(0, libc::RTMGRP_LINK as u32))?;
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
            _ => continue,
        };
        out.push(LinkEvent {
            deleted,
            index: m.header.index,
            name: m.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n),
                _ => None,
            }),
        });
    }
    Some(out)
}

/// Follows link events for the agent's lifetime: checks every enforced interface at once
/// (anything that happened between the attach and the subscription), then after each
/// notification.
pub async fn watch(
    mut events: LinkEvents,
    dp: Arc<Mutex<Datapath>>,
    shared: Arc<Mutex<Shared>>,
    args: RunArgs,
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
                if !evs.is_empty() {
                    run_check().await;
                }
            }
            Ok(None) => {
                warn!("link notifications were lost or unreadable: checking every interface");
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
pub fn check(dp: &Mutex<Datapath>, shared: &Mutex<Shared>, args: &RunArgs) {
    for iface in &args.ifaces {
        let now = host::ifindex(iface);
        let linked = match links::pinned_ifindex(&args.pin_dir, iface) {
            Ok(l) => l,
            Err(e) => {
                warn!(interface = %iface, "reading the pinned link: {e}");
                Some(0)
            }
        };
        if now.is_some() && now == linked {
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

fn gone(s: &mut Shared, args: &RunArgs, iface: &str, linked: Option<u32>) {
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

fn back(dp: &mut Datapath, s: &mut Shared, args: &RunArgs, iface: &str, ifindex: u32) {
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

fn write_state(s: &Shared, args: &RunArgs) {
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
                    name: Some("eth1".into())
                },
                LinkEvent {
                    deleted: false,
                    index: 9,
                    name: Some("eth1".into())
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
