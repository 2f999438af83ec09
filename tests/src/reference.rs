//! The reference datapath in userspace: the shared parser, the shared verdict function and
//! the shared flow state machine over the compiled policy, with a flow table of its own. It
//! must agree with the kernel program frame by frame (the differential test checks it). A
//! test oracle (it asserts), so it lives here, not in the shipped binary.
use std::collections::BTreeMap;

use conduit_common::{
    flow::{FLOW_NEW, FlowKey, FlowVal, next_state, state_key},
    parse::parse,
    verdict::{
        Decision, Fast, Fib, FlowTable, Route, Tables, check_ingress, decide_at, decide_with,
        fast_path, malformed,
    },
    *,
};

pub use conduit_agent::agent::host::monotonic_ns;
use conduit_agent::policy::compile::Compiled;

pub struct Reference {
    pub compiled: Compiled,
    pub flows: BTreeMap<FlowKey, FlowVal>,
    /// Frames judged by the fast path (each checked against the full decision).
    pub fast_hits: u64,
    /// Whether the last frame was judged by the fast path.
    pub last_fast: bool,
}

impl Reference {
    pub fn new(compiled: Compiled) -> Self {
        Self {
            compiled,
            flows: BTreeMap::new(),
            fast_hits: 0,
            last_fast: false,
        }
    }

    /// Judges one frame at `now` (CLOCK_MONOTONIC ns) and updates the flow table. The
    /// ingress interface is not known: no interface checks (as for `replay`'s frames).
    pub fn judge(&mut self, frame: &[u8], now: u64) -> Decision {
        self.judge_at(frame, now, 0, &NoRoute)
    }

    /// [`Reference::judge`] for a frame that came in on `ifindex`, with the interface checks
    /// against `fib` (what `compiled.ingress` says of the interface).
    pub fn judge_at<F: Fib>(&mut self, frame: &[u8], now: u64, ifindex: u32, fib: &F) -> Decision {
        let slot = self.compiled.slot;
        self.last_fast = false;
        let mut p = match parse(frame) {
            Ok(p) => p,
            Err(_) => return malformed(self, slot),
        };
        p.ifindex = ifindex;
        // The kernel's fast path, which must give what the full decision gives.
        let full = decide_at(self, fib, slot, &p, now);
        let mut flows = Flows(&mut self.flows);
        let mut d = Decision::FAIL_CLOSED;
        let compiled = &self.compiled;
        match fast_path(compiled, &mut flows, slot, GENERATION, &p, now, &mut d) {
            // The reference never learns (`Fast::Learn` is for a learning datapath), but
            // the decision is the same.
            Fast::Decided | Fast::Learn => {
                assert_eq!(d, full, "the fast path disagrees with decide on {p:?}");
                self.fast_hits += 1;
                self.last_fast = true;
                return d;
            }
            Fast::NoFlow => {
                // The full path without its flow lookups: the table has nothing for them.
                let mut d = decide_with(&*self, slot, &p, now, true);
                check_ingress(&*self, fib, slot, &p, &mut d);
                assert_eq!(d, full, "decide without flow lookups disagrees on {p:?}");
            }
            Fast::Full => {}
        }
        let d = full;
        if let Some(key) = state_key(&d, &p) {
            let old = if d.flow == FLOW_NEW {
                Some(self.flows.get(&key).copied().unwrap_or_default())
            } else {
                self.flows.get(&key).copied()
            };
            if let Some(old) = old {
                match next_state(&d, &p, &old, now, GENERATION) {
                    Some(v) => {
                        self.flows.insert(key, v);
                    }
                    None => {
                        self.flows.remove(&key);
                    }
                }
            }
        }
        d
    }
}

/// The routing table of a frame whose ingress is not known: never asked (no interface
/// checks without an interface).
struct NoRoute;

impl Fib for NoRoute {
    fn reverse(&self, _: &conduit_common::verdict::Packet) -> Route {
        Route::None
    }
}

/// The reference holds one policy: its generation never changes.
const GENERATION: u64 = 1;

/// The reference's flow table as the fast path updates it.
struct Flows<'a>(&'a mut BTreeMap<FlowKey, FlowVal>);

impl FlowTable for Flows<'_> {
    fn with_flow<R>(&mut self, key: &FlowKey, f: impl FnOnce(&mut FlowVal) -> R) -> Option<R> {
        self.0.get_mut(key).map(f)
    }
}

impl Tables for Reference {
    fn id_exact(&self, key: &IpKey) -> Option<Identity> {
        self.compiled.id_exact(key)
    }
    fn id_cidr(&self, key: &LpmIpData) -> Option<Identity> {
        self.compiled.id_cidr(key)
    }
    fn mac(&self, key: &MacKey) -> Option<MacBinding> {
        self.compiled.mac(key)
    }
    fn conduit(&self, key: &LpmConduitData) -> Option<ConduitHit> {
        self.compiled.conduit(key)
    }
    fn zone(&self, key: &ZoneKey) -> Option<ZoneCfg> {
        self.compiled.zone(key)
    }
    fn l2_allowed(&self, key: &EtherTypeKey) -> bool {
        self.compiled.l2_allowed(key)
    }
    fn settings(&self, slot: u32) -> Option<Settings> {
        self.compiled.settings(slot)
    }
    fn flow(&self, key: &FlowKey) -> Option<FlowVal> {
        self.flows.get(key).copied()
    }
    fn conduit_info(&self, key: &ConduitKey) -> Option<ConduitInfo> {
        self.compiled.conduit_info(key)
    }
    fn now_tai_ns(&self) -> u64 {
        self.compiled.now_tai_ns()
    }
    fn granted(&self, key: &ConduitKey) -> bool {
        self.compiled.granted(key)
    }
    fn failsafe(&self, key: &FailsafeKey) -> bool {
        self.compiled.failsafe(key)
    }
    fn filter(&self, key: &FilterKey) -> Option<&Filter> {
        self.compiled.filter(key)
    }
    fn ingress(&self, ifindex: u32) -> Option<IngressCfg> {
        self.compiled.ingress(ifindex)
    }
    fn zone_if(&self, key: &ZoneIfKey) -> bool {
        self.compiled.zone_if(key)
    }
}
