//! What the agent tells `conduit status` and the metrics: the live policy and the names
//! behind the IDs in the kernel maps. Written atomically (temp file + rename) after every
//! change, next to the pins' owner in the state directory.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Iface {
    pub name: String,
    /// `native` or `skb`.
    pub mode: String,
    /// The interface was deleted: nothing is attached until it returns (the agent re-attaches
    /// the program then).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub pid: u32,
    pub policy_path: PathBuf,
    pub sha256: String,
    pub site: String,
    pub generation: u64,
    pub pin_dir: PathBuf,
    pub interfaces: Vec<Iface>,
    /// Zone id → name.
    pub zones: BTreeMap<u32, String>,
    /// Conduit id → name.
    pub conduits: BTreeMap<u32, String>,
    pub reloads_success: u64,
    pub reloads_failure: u64,
    /// Who signed the live policy (`run --allowed-signers`); `None`: unsigned.
    #[serde(default)]
    pub signer: Option<crate::integrity::Signer>,
    /// The live policy's on-demand conduits, by name (SPEC §8).
    #[serde(default)]
    pub on_demand: BTreeMap<String, super::grants::OnDemand>,
    /// Open grants, by conduit name: what the kernel's grants map holds, with who and why.
    #[serde(default)]
    pub grants: BTreeMap<String, super::grants::GrantRecord>,
    /// Where the agent records grants and policies, for `conduit revoke` when no agent runs.
    #[serde(default)]
    pub change_log: Option<PathBuf>,
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
}

impl State {
    /// The id of a conduit of the live policy, by name.
    pub fn conduit_id(&self, name: &str) -> Option<u32> {
        self.conduits
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(id, _)| *id)
    }

    /// The name of a zone id of the live policy: `unknown` for 0, `zone-ID` for an id the
    /// state does not name (a slot written by another policy).
    pub fn zone_name(&self, id: u32) -> String {
        if id == 0 {
            "unknown".into()
        } else {
            self.zones
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("zone-{id}"))
        }
    }
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("state.json")
}

pub fn write(state_dir: &Path, s: &State) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(format!(".state.json.{}", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path(state_dir))
}

pub fn read(state_dir: &Path) -> std::io::Result<State> {
    let bytes = std::fs::read(path(state_dir))?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}
