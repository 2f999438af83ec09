//! The real XDP program with a policy loaded, driven through BPF_PROG_TEST_RUN, next to the
//! userspace reference over the same compiled policy.
use aya::programs::{TestRun as _, TestRunOptions};
use conduit_agent::{
    datapath::{Datapath, LoadOptions},
    policy::{compile::Compiled, load::load_bytes},
};
use conduit_common::{Trace, Verdict, verdict::Decision};

use crate::reference::Reference;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

pub struct Kernel {
    pub dp: Datapath,
    seq: u64,
}

/// Loads the program (with tracing) and `yaml` into it; returns it with the reference model
/// of the same compiled policy. Panics with the diagnostics if the policy is invalid.
pub fn with_policy(yaml: &str) -> (Kernel, Reference) {
    with_load(yaml, LoadOptions::default())
}

/// [`with_policy`] with the program loaded for learning (`conduit run --learn-dir`).
pub fn learning(yaml: &str) -> (Kernel, Reference) {
    with_load(
        yaml,
        LoadOptions {
            learn: true,
            ..Default::default()
        },
    )
}

/// [`with_policy`] with the program loaded as `options` say (always with tracing): e.g. the
/// benchmarks' object, whose programs vary the source address run by run.
pub fn with_load(yaml: &str, options: LoadOptions) -> (Kernel, Reference) {
    let options = LoadOptions {
        trace: true,
        ..options
    };
    let dp =
        Datapath::load_options(options, None).expect("load the XDP program (root, bpffs, BTF)");
    let mut k = Kernel { dp, seq: 0 };
    let compiled = k.reload(yaml);
    (k, Reference::new(compiled))
}

impl Kernel {
    /// Loads `yaml` as the next generation (the agent's reload); returns what was compiled.
    /// Panics with the diagnostics if the policy is invalid.
    pub fn reload(&mut self, yaml: &str) -> Compiled {
        let slot = self.dp.next_slot().expect("active slot");
        let (loaded, d) = load_bytes(yaml.as_bytes(), slot);
        let loaded = loaded.unwrap_or_else(|| panic!("invalid test policy:\n{d}\n{yaml}"));
        self.dp.apply(&loaded.compiled).expect("apply the policy");
        loaded.compiled
    }

    /// Runs one frame (at least 14 bytes: the kernel refuses shorter ones) through the
    /// program; returns the XDP action and the recorded decision.
    pub fn run(&mut self, frame: &[u8]) -> (u32, Trace) {
        self.run_in(frame, 0)
    }

    /// [`Kernel::run`] with the frame arriving on interface `ingress` (an ifindex of the
    /// calling thread's network namespace; 0: the loopback interface, as without a
    /// context), given to the kernel as the run's `struct xdp_md`.
    pub fn run_in(&mut self, frame: &[u8], ingress: u32) -> (u32, Trace) {
        assert!(
            frame.len() >= 14,
            "BPF_PROG_TEST_RUN needs at least an Ethernet header"
        );
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex (u32 each).
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ingress.to_ne_bytes());
        let prog = self.dp.program().expect("program");
        let action = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: (ingress != 0).then_some(&ctx[..]),
                repeat: 1,
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN")
            .return_value;
        let t = self.dp.last_trace().expect("trace");
        self.seq += 1;
        assert_eq!(t.seq, self.seq, "the program did not record this run");
        (action, t)
    }
}

/// The XDP action a decision maps to.
pub fn action_of(d: &Decision) -> u32 {
    if d.verdict == Verdict::Deny {
        XDP_DROP
    } else {
        XDP_PASS
    }
}

/// The decision as the kernel records it, for comparison; `fast`: the reference's fast path
/// decided (the kernel's must have too).
pub fn as_trace(d: &Decision, fast: bool, seq: u64) -> Trace {
    Trace {
        seq,
        verdict: d.verdict as u32,
        reason: d.reason as u32,
        conduit: d.conduit,
        src_zone: d.src_zone,
        dst_zone: d.dst_zone,
        flow: u32::from(d.flow),
        fast: u32::from(fast),
        _pad: 0,
    }
}

/// The two-zone policy of the kernel tests: an HMI (10.0.0.20, MAC 02:..:0a) in `supervisory`
/// (SL-T 2), a PLC (10.1.0.10, MAC 02:..:0b) in `control` (SL-T 3), `defaults` as given (a
/// YAML flow mapping, e.g. `{ mode: enforce }`), then `conduits` (the whole `conduits:` key).
pub fn hmi_plc_policy(site: &str, defaults: &str, conduits: &str) -> String {
    format!(
        r#"
version: 1
site: {site}
defaults: {defaults}
zones:
  - name: supervisory
    security_level: 2
    assets: [{{ name: hmi, ip: 10.0.0.20, mac: "02:00:00:00:00:0a" }}]
  - name: control
    security_level: 3
    assets: [{{ name: plc, ip: 10.1.0.10, mac: "02:00:00:00:00:0b" }}]
{conduits}"#
    )
}

/// [`hmi_plc_policy`] with two conduits from the HMI's zone to the PLC's: `vendor-access`
/// (tcp/22) with `vendor` among its keys (e.g. `expires: ...` or `on_demand: ...`), and
/// `polling` (tcp/502), an ordinary one beside it.
pub fn vendor_and_polling(site: &str, vendor: &str) -> String {
    let conduits = format!(
        "conduits:
  - name: vendor-access
    from: supervisory
    to: control
    {vendor}
    rules: [{{ proto: tcp, ports: [22] }}]
  - name: polling
    from: supervisory
    to: control
    rules: [{{ proto: tcp, ports: [502] }}]
"
    );
    hmi_plc_policy(site, "{}", &conduits)
}

/// Opens on-demand conduit `name`'s grant until `until` (CLOCK_BOOTTIME seconds) in the
/// kernel's live slot and in the reference, as the agent's `conduit grant` does.
pub fn grant_until(k: &mut Kernel, r: &mut Reference, name: &str, until: u32) {
    let id = r.compiled.conduit_ids[name];
    let slot = k.dp.active().expect("active slot").slot;
    k.dp.set_grant(
        &conduit_common::ConduitKey { slot, conduit: id },
        &conduit_common::Grant { until, _pad: 0 },
    )
    .expect("write the grant");
    r.compiled.grants.insert(id, until);
}

/// [`grant_until`] `seconds` from now.
pub fn grant(k: &mut Kernel, r: &mut Reference, name: &str, seconds: u32) {
    let until = conduit_agent::policy::compile::boot_now_s() + seconds;
    grant_until(k, r, name, until);
}

/// Closes on-demand conduit `name` in the kernel (both slots) and in the reference, as
/// `conduit revoke` does; how many grants the kernel held.
pub fn revoke(k: &mut Kernel, r: &mut Reference, name: &str) -> usize {
    let id = r.compiled.conduit_ids[name];
    r.compiled.grants.remove(&id);
    k.dp.remove_grants(id).expect("remove the grants")
}

/// The HMI's and the PLC's addresses in [`hmi_plc_policy`] (their MACs are
/// [`crate::frames::MAC_A`] and [`crate::frames::MAC_B`]).
pub const HMI: [u8; 4] = [10, 0, 0, 20];
pub const PLC: [u8; 4] = [10, 1, 0, 10];

/// TCP flags.
pub const SYN: u8 = 0x02;
pub const SYN_ACK: u8 = 0x12;
pub const ACK: u8 = 0x10;

/// A segment of the TCP session from the HMI's port `client` to the PLC's `port`, sent by the
/// HMI.
pub fn hmi_to_plc(client: u16, port: u16, flags: u8) -> Vec<u8> {
    data_segment(true, client, port, flags, &[])
}

/// A segment of the same session sent by the PLC.
pub fn plc_to_hmi(client: u16, port: u16, flags: u8) -> Vec<u8> {
    data_segment(false, client, port, flags, &[])
}

/// A segment with `payload` of the TCP session from the HMI's port `client` to the PLC's
/// `port`, sent by the HMI (`to_plc`) or by the PLC.
pub fn data_segment(to_plc: bool, client: u16, port: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (data, len) = crate::frames::tcp_data(payload);
    let (sport, dport) = if to_plc {
        (client, port)
    } else {
        (port, client)
    };
    let l4 = crate::frames::L4::TcpData {
        sport,
        dport,
        flags,
        data,
        len,
    };
    if to_plc {
        crate::frames::v4(crate::frames::MAC_A, HMI, PLC, l4)
    } else {
        crate::frames::v4(crate::frames::MAC_B, PLC, HMI, l4)
    }
}

/// Runs `frame` through kernel and reference, which must agree; returns the XDP action, the
/// reason and the verdict.
pub fn step(
    k: &mut Kernel,
    r: &mut Reference,
    frame: &[u8],
) -> (u32, conduit_common::Reason, conduit_common::Verdict) {
    let (action, t) = k.run(frame);
    let want = r.judge(frame, crate::reference::monotonic_ns());
    assert_eq!(
        as_trace(&want, r.last_fast, t.seq),
        t,
        "kernel and reference disagree"
    );
    (
        action,
        conduit_common::Reason::try_from(t.reason).unwrap(),
        conduit_common::Verdict::try_from(t.verdict).unwrap(),
    )
}

/// Per-conduit counters of a filter's drops: packets with `verdict` and `reason`, and the
/// conduits that have any.
pub fn filter_drops(
    k: &Kernel,
    verdict: conduit_common::Verdict,
    reason: Option<conduit_common::Reason>,
) -> (u64, std::collections::BTreeSet<u32>) {
    let drops = k.dp.conduit_drops().unwrap();
    let n = drops
        .iter()
        .filter(|(key, _)| {
            key.verdict == verdict as u32 && reason.is_none_or(|r| key.reason == r as u32)
        })
        .map(|(_, c)| c.packets)
        .sum();
    (n, drops.keys().map(|key| key.conduit).collect())
}

/// Runs `frame` through the kernel and the reference, which must agree, and checks what the
/// kernel did: (XDP action, reason, whether the fast path decided).
pub fn expect(
    k: &mut Kernel,
    r: &mut Reference,
    frame: &[u8],
    want: (u32, conduit_common::Reason, bool),
    what: &str,
) {
    let (a, t) = k.run(frame);
    let d = r.judge(frame, crate::reference::monotonic_ns());
    assert_eq!(
        as_trace(&d, r.last_fast, t.seq),
        t,
        "{what}: kernel and reference disagree"
    );
    assert_eq!(
        (
            a,
            conduit_common::Reason::try_from(t.reason).unwrap(),
            t.fast == 1
        ),
        want,
        "{what}: {t:?}"
    );
}
