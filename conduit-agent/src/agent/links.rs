//! XDP links pinned under `PIN_DIR/links/IFACE`: they keep the program attached when the
//! agent dies, and a new agent swaps its program into them in place (bpf_link_update), so
//! enforcement has no gap.
use std::path::{Path, PathBuf};

use aya::programs::{
    Xdp,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};

use crate::datapath::{AttachMode, Datapath, DatapathError};

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
}

/// Attaches the loaded program to `iface`: into the pinned link if one exists (adoption),
/// else with a new link that is pinned. Returns the mode (`native`/`skb`) and whether an
/// existing link was adopted.
/// `known_mode` is the mode an earlier agent recorded for an adopted link (bpffs holds only
/// BPF objects, so the mode lives in the state file).
pub fn attach(
    dp: &mut Datapath,
    pin_dir: &Path,
    iface: &str,
    mode: AttachMode,
    known_mode: Option<&str>,
) -> Result<(String, bool), LinkError> {
    if !super::host::iface_exists(iface) {
        return Err(LinkError::NoSuchInterface(iface.to_owned()));
    }
    let dir = links_dir(pin_dir);
    std::fs::create_dir_all(&dir).map_err(|e| LinkError::Pin(dir.clone(), e.to_string()))?;
    let pin = dir.join(iface);
    let prog: &mut Xdp = dp.program()?;
    if pin.exists() {
        let pinned =
            PinnedLink::from_pin(&pin).map_err(|e| LinkError::Pin(pin.clone(), e.to_string()))?;
        let fd: FdLink = pinned.into();
        let link = XdpLink::try_from(fd).map_err(|e| LinkError::Pin(pin.clone(), e.to_string()))?;
        prog.attach_to_link(link)
            .map_err(|e| LinkError::Pin(pin.clone(), e.to_string()))?;
        return Ok((known_mode.unwrap_or("unknown").to_owned(), true));
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
