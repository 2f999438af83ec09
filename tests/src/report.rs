//! What every benchmark report shares: the machine it ran on, and where the report goes.

/// "N CPUs (model), Linux release": the machine line of a report.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {}", kernel.trim())
}

/// Prints a benchmark's Markdown report and writes it to `$CONDUIT_BENCH_OUT` when set
/// (`cargo xtask bench` collects the sections into BENCHMARKS.md).
pub fn publish(out: &str) {
    print!("{out}");
    if let Ok(path) = std::env::var("CONDUIT_BENCH_OUT") {
        std::fs::write(&path, out).unwrap_or_else(|e| panic!("writing the report {path}: {e}"));
    }
}
