//! Facts about the gateway host: its own addresses (for the failsafe), interface names, and
//! this process's descriptor limit.
use std::{ffi::CStr, net::IpAddr};

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
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list that we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list returned by getifaddrs, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET: a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6: a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    Ok(out)
}

/// Whether interface `name` has an address that routes: any IPv4 address, or an IPv6 one
/// that is not link-local (every interface that is up has one of those).
pub fn has_routed_address(name: &str) -> bool {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list that we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return false;
    }
    let mut found = false;
    let mut cur = head;
    while !cur.is_null() && !found {
        // SAFETY: cur is a node of the list returned by getifaddrs, not yet freed.
        let ifa = unsafe { &*cur };
        // SAFETY: ifa_name is a NUL-terminated string of the node.
        let same = !ifa.ifa_name.is_null()
            && unsafe { CStr::from_ptr(ifa.ifa_name) }.to_bytes() == name.as_bytes();
        if same && !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                found = true;
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6: a sockaddr_in6.
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) }
                    .sin6_addr
                    .s6_addr;
                found = !(a[0] == 0xfe && a[1] & 0xc0 == 0x80);
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    found
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
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
