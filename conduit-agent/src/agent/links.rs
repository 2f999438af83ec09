//! XDP links pinned under `PIN_DIR/links/IFACE`: they keep the program attached when the
//! agent dies, and a new agent swaps its program into them in place (bpf_link_update), so
//! enforcement has no gap. A link belongs to one device: when its interface is deleted the
//! link is defunct, and the pin is replaced by a new link on the interface that returns.
use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::programs::{
    Xdp,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};

use tracing::warn;

use crate::datapath::{AttachMode, Datapath, DatapathError, sys};

pub fn links_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("links")
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("interface {0:?} does not exist")]
    NoSuchInterface(String),
    #[error("pinned link {0}: {1}")]
    Pin(PathBuf, String),
    #[error("interface {0:?}: reading its links (rtnetlink): {1}")]
    Links(String, std::io::Error),
}

/// Attaches the loaded program to `iface`: into the pinned link if one exists and is on this
/// very device (adoption), else with a new link that is pinned. A pinned link of a device
/// that is gone (the interface was deleted and created again while no agent ran) is defunct:
/// it is replaced, with a warning. Returns the mode (`native`/`skb`) and whether an existing
/// link was adopted.
/// `known_mode` is the mode an earlier agent recorded for an adopted link (bpffs holds only
/// BPF objects, so the mode lives in the state file).
pub fn attach(
    dp: &mut Datapath,
    pin_dir: &Path,
    iface: &str,
    mode: AttachMode,
    known_mode: Option<&str>,
) -> Result<(String, bool), LinkError> {
    let Some(ifindex) = super::host::ifindex(iface) else {
        return Err(LinkError::NoSuchInterface(iface.to_owned()));
    };
    // What the program must know of the interface, written before it can run there.
    let (cfg, why) = super::netlink::ingress_cfg(iface, ifindex)
        .map_err(|e| LinkError::Links(iface.to_owned(), e))?;
    dp.set_ingress(ifindex, &cfg)?;
    if let Some(why) = why {
        warn!(interface = %iface, "no reverse-path check on {iface}: {why}; list it in the `interfaces` of the zones behind it (README: Anti-spoofing)");
    }
    let dir = links_dir(pin_dir);
    std::fs::create_dir_all(&dir).map_err(|e| LinkError::Pin(dir.clone(), e.to_string()))?;
    let pin = dir.join(iface);
    match pinned_ifindex(pin_dir, iface)? {
        Some(linked) if linked == ifindex => {
            let pinned = PinnedLink::from_pin(&pin)
                .map_err(|e| LinkError::Pin(pin.clone(), e.to_string()))?;
            let fd: FdLink = pinned.into();
            let link =
                XdpLink::try_from(fd).map_err(|e| LinkError::Pin(pin.clone(), e.to_string()))?;
            let prog: &mut Xdp = dp.program()?;
            let id = prog
                .attach_to_link(link)
                .map_err(|e| LinkError::Pin(pin.clone(), e.to_string()))?;
            // The pin keeps the link; holding its fd too would keep a defunct link alive
            // after its interface goes away.
            drop(prog.take_link(id));
            return Ok((known_mode.unwrap_or("unknown").to_owned(), true));
        }
        Some(linked) => {
            warn!(
                interface = %iface,
                ifindex,
                pinned_ifindex = linked,
                "replacing the stale pinned link of {iface}: {}",
                if linked == 0 {
                    "its device was deleted (the interface was created again since)"
                } else {
                    "it is attached to another device"
                }
            );
            unpin(pin_dir, iface).map_err(|e| LinkError::Pin(pin.clone(), e.to_string()))?;
        }
        None => {}
    }
    let (id, mode) = dp.attach(iface, mode)?;
    let prog: &mut Xdp = dp.program()?;
    let link = prog
        .take_link(id)
        .map_err(|e| LinkError::Pin(pin.clone(), e.to_string()))?;
    let fd = FdLink::try_from(link).map_err(|e| LinkError::Pin(pin.clone(), e.to_string()))?;
    fd.pin(&pin)
        .map_err(|e| LinkError::Pin(pin.clone(), e.to_string()))?;
    Ok((mode.to_owned(), false))
}

/// The ifindex of the device the link pinned for `iface` is attached to: `None` without a
/// pin, `Some(0)` for a defunct link (its device was deleted; the kernel detached the program
/// then, and a link never moves to another device). An ifindex is the device's in its own
/// network namespace: compare it with the interface's in the agent's namespace.
pub fn pinned_ifindex(pin_dir: &Path, iface: &str) -> Result<Option<u32>, LinkError> {
    let pin = links_dir(pin_dir).join(iface);
    let fd = match sys::obj_get(&pin) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LinkError::Pin(pin, e.to_string())),
    };
    sys::xdp_link_ifindex(fd.as_fd())
        .map(Some)
        .map_err(|e| LinkError::Pin(pin, e.to_string()))
}

/// Removes the pin of `iface`'s link (the link itself goes with its last reference).
/// Returns whether there was one.
pub fn unpin(pin_dir: &Path, iface: &str) -> std::io::Result<bool> {
    match std::fs::remove_file(links_dir(pin_dir).join(iface)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes everything under `pin_dir` that conduit pinned: links (detaching the program),
/// maps, and the directory itself. Returns what was removed.
pub fn detach_all(pin_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for sub in ["links", "maps"] {
        let dir = pin_dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            std::fs::remove_file(e.path())?;
            removed.push(e.path());
        }
        std::fs::remove_dir(&dir)?;
    }
    if pin_dir.exists() {
        std::fs::remove_dir(pin_dir)?;
        removed.push(pin_dir.to_owned());
    }
    Ok(removed)
}

/// Interfaces with a pinned link.
pub fn pinned_ifaces(pin_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(links_dir(pin_dir)) else {
        return Vec::new();
    };
    let mut v: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}
