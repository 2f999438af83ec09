//! `--meta META.yaml`: what traffic cannot show (owner, physical boundary, safety
//! designation, approvals). Strict like the policy: unknown keys and names are errors, so
//! that a misspelt zone never silently leaves its owner open.
//!
//! ```yaml
//! owner: Plant engineering (J. Doe)
//! zones:
//!   control:
//!     owner: Automation team
//!     physical_boundary: Cabinet C2, building 4
//!     safety_designation: not safety-related
//! conduits:
//!   hmi-to-plc: { owner: Automation team, physical_boundary: Switch S3 port 4 to gateway eth1 }
//! approvals:
//!   - { name: J. Doe, role: Asset owner, date: 2026-11-20 }
//! ```
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::Policy;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub zones: BTreeMap<String, ZoneMeta>,
    #[serde(default)]
    pub conduits: BTreeMap<String, ConduitMeta>,
    #[serde(default)]
    pub approvals: Vec<Approval>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneMeta {
    pub owner: Option<String>,
    pub physical_boundary: Option<String>,
    pub safety_designation: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConduitMeta {
    pub owner: Option<String>,
    pub physical_boundary: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub name: String,
    pub role: Option<String>,
    pub date: Option<String>,
    pub note: Option<String>,
}

/// Parses the metadata and checks every zone and conduit it names against the policy.
pub fn parse(text: &str, p: &Policy) -> Result<Meta, String> {
    let m: Meta = marked_yaml::from_yaml(0, text).map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    for z in m.zones.keys() {
        if p.zone(z).is_none() {
            errors.push(format!("zone \"{z}\" is not in the policy"));
        }
    }
    for c in m.conduits.keys() {
        if !p.conduits.iter().any(|x| &x.name == c) {
            errors.push(format!("conduit \"{c}\" is not in the policy"));
        }
    }
    if errors.is_empty() {
        Ok(m)
    } else {
        Err(errors.join("; "))
    }
}
