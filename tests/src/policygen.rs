//! Generated site policies for the benchmarks (`conduit-agent/benches/compile.rs`,
//! `tests/benches/control.rs`) and the apply tests: YAML text, as a user's file would be.
//!
//! [`ZONES`] zones, `assets` `ip` assets spread over them (every 10th MAC-bound) plus one
//! `cidr` asset per zone, and `conduits` conduits between random pairs of zones with 1 to 3
//! rules each (single ports, port ranges, ICMP types). Deterministic for a given seed.
use std::fmt::Write as _;

pub const ZONES: usize = 100;

/// splitmix64: a small deterministic generator, so every run judges the same policy.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PORTS: &[u16] = &[
    22, 80, 102, 443, 502, 1883, 2404, 4840, 8883, 20000, 44818, 47808,
];
const RANGES: &[&str] = &[
    "20000-20010",
    "1024-2047",
    "5000-5100",
    "49152-65535",
    "161-162",
];

/// The policy text; see the module documentation.
pub fn policy_text(assets: usize, conduits: usize, seed: u64) -> String {
    policy_text_at(assets, conduits, seed, 0)
}

/// Like [`policy_text`], with asset `i` numbered `i + first` for its name, address and MAC
/// (its zone stays `i % ZONES`): policies whose ranges `first..first + assets` do not overlap
/// share no address. At most 2^24 numbers (10.0.0.0/8).
pub fn policy_text_at(assets: usize, conduits: usize, seed: u64, first: usize) -> String {
    let mut rng = Rng(seed);
    let mut y = String::with_capacity(assets * 72 + conduits * 200 + 4096);
    y.push_str("version: 1\nsite: bench\ndefaults:\n  mode: enforce\n  log: deny\nzones:\n");
    for z in 0..ZONES {
        writeln!(
            y,
            "  - name: zone-{z:03}\n    security_level: 2\n    assets:"
        )
        .unwrap();
        writeln!(y, "      - {{ name: net-{z:03}, cidr: 172.16.{z}.0/24 }}").unwrap();
        for i in (z..assets).step_by(ZONES) {
            let i = i + first;
            let (a, b, c) = ((i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
            write!(y, "      - {{ name: a{i}, ip: 10.{a}.{b}.{c}").unwrap();
            if i.is_multiple_of(10) {
                write!(
                    y,
                    ", mac: \"02:00:{:02x}:{:02x}:{:02x}:{:02x}\"",
                    (i >> 24) & 0xff,
                    (i >> 16) & 0xff,
                    (i >> 8) & 0xff,
                    i & 0xff
                )
                .unwrap();
            }
            y.push_str(" }\n");
        }
    }
    y.push_str("conduits:\n");
    for n in 0..conduits {
        let from = rng.below(ZONES);
        let to = (from + 1 + rng.below(ZONES - 1)) % ZONES;
        writeln!(
            y,
            "  - name: c{n}\n    from: zone-{from:03}\n    to: zone-{to:03}\n    rules:"
        )
        .unwrap();
        for _ in 0..1 + rng.below(3) {
            match rng.below(10) {
                0..=4 => {
                    let p = PORTS[rng.below(PORTS.len())];
                    let proto = if rng.below(4) == 0 { "udp" } else { "tcp" };
                    writeln!(y, "      - {{ proto: {proto}, ports: [{p}] }}").unwrap();
                }
                5..=6 => {
                    let r = RANGES[rng.below(RANGES.len())];
                    let p = PORTS[rng.below(PORTS.len())];
                    writeln!(y, "      - {{ proto: tcp, ports: [{p}, \"{r}\"] }}").unwrap();
                }
                7..=8 => {
                    let lo = 1024 + rng.below(60000) as u16;
                    let hi = lo.saturating_add(rng.below(500) as u16);
                    writeln!(y, "      - {{ proto: udp, ports: [\"{lo}-{hi}\"] }}").unwrap();
                }
                _ => {
                    y.push_str("      - { proto: icmp, icmp_types: [echo-request] }\n");
                }
            }
        }
    }
    y
}
