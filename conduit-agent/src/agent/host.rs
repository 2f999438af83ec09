//! Facts about the gateway host: its own addresses (for the failsafe), interface names, and
//! this process's descriptor limit.
use std::net::IpAddr;

/// This host's name (the report's gateway, the learn dir's header).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Every address configured on this host's interfaces (in the agent's network namespace),
/// sorted and without duplicates.
pub fn own_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut out: Vec<IpAddr> = addresses()?.map(|(_, a)| a).collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Whether interface `name` has an address that routes: any IPv4 address, or an IPv6 one
/// that is not link-local (every interface that is up has one of those).
pub fn has_routed_address(name: &str) -> bool {
    addresses().is_ok_and(|mut all| {
        all.any(|(iface, a)| {
            iface == name
                && match a {
                    IpAddr::V4(_) => true,
                    IpAddr::V6(v6) => !v6.is_unicast_link_local(),
                }
        })
    })
}

/// Every (interface, IP address) pair of this host: getifaddrs(3), through nix.
fn addresses() -> std::io::Result<impl Iterator<Item = (String, IpAddr)>> {
    let all = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(all.filter_map(|ifa| {
        let a = ifa.address?;
        let ip = match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => return None,
        };
        Some((ifa.interface_name, ip))
    }))
}

/// The name of an interface index, or the index as text.
pub fn ifname(index: u32) -> String {
    ioctl_socket()
        .ok()
        .and_then(|s| rustix::net::netdevice::index_to_name(&s, index).ok())
        .unwrap_or_else(|| index.to_string())
}

/// A socket for the interface ioctls (SIOCGIFNAME, SIOCGIFINDEX), as libc's
/// `if_indextoname`/`if_nametoindex` open one for each call.
fn ioctl_socket() -> std::io::Result<rustix::fd::OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socket_with};
    Ok(socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Whether an interface of this name exists (in this network namespace).
pub fn iface_exists(name: &str) -> bool {
    ifindex(name).is_some()
}

/// The index of the interface of this name (in this network namespace), if there is one. A
/// device deleted and created again under the same name has a new index.
pub fn ifindex(name: &str) -> Option<u32> {
    let s = ioctl_socket().ok()?;
    rustix::net::netdevice::name_to_index(&s, name)
        .ok()
        .filter(|&i| i != 0)
}

/// This process's soft descriptor limit (`RLIMIT_NOFILE`); `u64::MAX` when unlimited.
pub fn fd_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Raises this process's soft descriptor limit to its hard limit (systemd's default soft
/// limit is 1024 whatever the hard one) and returns the limit then in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: l.maximum,
                maximum: l.maximum,
            },
        )?;
    }
    Ok(fd_limit())
}

/// CLOCK_MONOTONIC in ns: the clock of the kernel program (which reads its coarse variant).
pub fn monotonic_ns() -> u64 {
    clock_ns(rustix::time::ClockId::Monotonic)
}

/// A clock's time in ns.
pub fn clock_ns(clock: rustix::time::ClockId) -> u64 {
    let ts = rustix::time::clock_gettime(clock);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loopback interface, in whatever namespace the test runs: 127.0.0.1 and nothing
    /// that is not configured somewhere.
    #[test]
    fn addresses_of_this_host() {
        let own = own_addresses().unwrap();
        assert!(own.contains(&IpAddr::from([127, 0, 0, 1])), "{own:?}");
        assert!(
            own.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates: {own:?}"
        );
        assert!(has_routed_address("lo"));
        assert!(!has_routed_address("no-such-interface-x"));
        // `ip` (iproute2) sees the same addresses.
        let out = std::process::Command::new("ip")
            .args(["-o", "addr", "show"])
            .output()
            .expect("running `ip -o addr show` (iproute2)");
        let text = String::from_utf8_lossy(&out.stdout);
        for a in &own {
            assert!(
                text.contains(&format!(" {a}/")),
                "{a} not in ip's list:\n{text}"
            );
        }
    }
}
