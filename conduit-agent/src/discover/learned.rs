//! The learn dirs of `conduit run --learn-dir` as a discover source.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
};

use super::{
    DiscoverError,
    observe::{FlowKey, FlowObservation, FlowStats, Observations, Source, SourceSummary},
};

/// A learn dir of `conduit run --learn-dir` (`crate::learned`): one flow record per (client,
/// server, protocol, port) with its counts, and the Modbus requests per unit.
pub struct LearnDir {
    pub path: PathBuf,
}

impl Source for LearnDir {
    fn read_into(&mut self, obs: &mut Observations) -> Result<SourceSummary, DiscoverError> {
        let dir = self.path.display().to_string();
        let store = crate::learned::Store::load(&self.path)
            .map_err(|e| DiscoverError::input(&e.file, e.message))?
            .ok_or_else(|| {
                DiscoverError::input(
                    &dir,
                    format!(
                        "no {} in this directory: is it the --learn-dir of a `conduit run` that has \
                         drained at least once (every --learn-interval, and on exit)?",
                        crate::learned::FILE
                    ),
                )
            })?;
        let mut summary = SourceSummary {
            what: format!("learn dir {dir} (gateway {})", store.gateway),
            records: store.records() as u64,
            ..SourceSummary::default()
        };
        // Modbus requests, by the flow they belong to (client, server, tcp/502).
        let mut modbus: BTreeMap<(IpAddr, IpAddr), BTreeMap<u8, BTreeSet<u8>>> = BTreeMap::new();
        for (id, r) in &store.modbus {
            modbus
                .entry((id.client, id.server))
                .or_default()
                .entry(id.unit)
                .or_default()
                .extend(&r.functions);
        }
        for (id, r) in &store.flows {
            summary.ip += 1;
            summary.first = if summary.first == 0 {
                r.first
            } else {
                summary.first.min(r.first)
            };
            summary.last = summary.last.max(r.last);
            obs.host(id.client, r.first, r.flows + r.denied);
            if r.answered > 0 {
                obs.host(id.server, r.first, r.answered);
            }
            for (ip, mac, varies) in [
                (id.client, r.client_mac, r.mac_varies),
                (id.server, r.server_mac, r.server_mac_varies),
            ] {
                match (mac, varies) {
                    (_, true) => obs.several_macs(ip),
                    (Some(mac), false) => obs.pair(ip, mac),
                    (None, false) => {}
                }
            }
            let key = FlowKey {
                client: id.client,
                server: id.server,
                proto: id.proto,
                port: id.port,
            };
            let is_modbus = id.proto == 6 && id.port == conduit_common::inspect::modbus::PORT;
            obs.flow(FlowObservation {
                key,
                stats: FlowStats {
                    // A record made by its replies alone (drained between the flow and its
                    // answer) still is one connection.
                    connections: (r.flows + r.denied).max(r.answered),
                    answered: r.answered,
                    first: r.first,
                    last: r.last,
                    modbus: if is_modbus {
                        modbus.remove(&(id.client, id.server)).unwrap_or_default()
                    } else {
                        BTreeMap::new()
                    },
                    ..FlowStats::default()
                },
            });
        }
        if summary.ip == 0 {
            return Err(DiscoverError::input(
                &dir,
                "no flow in the learn dir: nothing to discover".into(),
            ));
        }
        Ok(summary)
    }
}
