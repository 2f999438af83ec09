use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// A name no other test run uses: prefix, this process's id and a counter, at most 15 bytes
/// (the limit for interface names).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id() % 1_000_000);
    assert!(name.len() <= 15, "name {name} too long for an interface");
    name
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace created by the test; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let name = unique_name(prefix);
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Whether a TCP connection from this namespace to `addr:port` in `server` succeeds (`nc`;
    /// a listener is started there for it, and stopped).
    pub fn tcp_connects(&self, server: &Netns, addr: &str, port: u16) -> bool {
        let mut l = server
            .command("nc")
            .args(["-l", "-k", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        server.wait_listening("tcp", port);
        let ok = self
            .command("nc")
            .args(["-z", "-w", "1", addr, &port.to_string()])
            .status()
            .unwrap()
            .success();
        crate::signal(l.id(), libc::SIGTERM);
        let _ = l.wait();
        ok
    }

    /// Waits (at most 15 s, else panics) until a socket of `proto` (`tcp` or `udp`) is bound
    /// to `port` in this namespace: a server started in the background is ready (`ss`,
    /// iproute2's socket list), instead of a fixed wait.
    pub fn wait_listening(&self, proto: &str, port: u16) {
        let flag = match proto {
            "tcp" => "-Hltn",
            "udp" => "-Hlun",
            _ => panic!("wait_listening: tcp or udp, not {proto}"),
        };
        let ms = std::time::Duration::from_millis;
        let listening = crate::poll(ms(15_000), ms(10), || {
            self.command("ss")
                .args([flag, &format!("sport = :{port}")])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty())
        });
        assert!(
            listening.is_some(),
            "nothing listens on {proto} port {port} in {}",
            self.name
        );
    }

    /// Waits (at most 3 s) until this namespace's addresses are what they will stay: every
    /// link that is up, with IPv6 on, has its link-local address, and no address is still
    /// tentative. The kernel adds a link's IPv6 link-local address about a second after the
    /// link comes up; an agent started before that re-applies its policy when it appears
    /// (the failsafe follows the host's addresses), and a test that counts generations would
    /// count one more. Not an assertion: a link whose address never comes costs the wait.
    pub fn settle_addresses(&self) {
        let ms = std::time::Duration::from_millis;
        let _ = crate::poll(ms(3000), ms(20), || self.addresses_settled());
    }

    fn addresses_settled(&self) -> bool {
        let Ok(out) = Command::new("ip")
            .args(["-n", &self.name, "-j", "addr", "show"])
            .output()
        else {
            return false;
        };
        let Ok(links) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return false;
        };
        let links = links.as_array().cloned().unwrap_or_default();
        in_netns(self, || {
            links.iter().all(|l| {
                let addrs = l["addr_info"].as_array().cloned().unwrap_or_default();
                if addrs.iter().any(|a| a["tentative"] == true) {
                    return false;
                }
                let ipv6_on = l["ifname"].as_str().is_some_and(|n| {
                    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{n}/disable_ipv6"))
                        .is_ok_and(|v| v.trim() == "0")
                });
                l["link_type"] == "loopback"
                    || l["operstate"] != "UP"
                    || !ipv6_on
                    || addrs
                        .iter()
                        .any(|a| a["family"] == "inet6" && a["scope"] == "link")
            })
        })
    }

    /// A command that runs inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command inside the namespace and returns its output, panicking if it fails.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self
            .command(argv[0])
            .args(&argv[1..])
            .output()
            .expect("spawn");
        assert!(
            out.status.success(),
            "in netns {}: {} failed: {}{}",
            self.name,
            argv.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also removes every interface inside it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair with one end in each namespace, addressed and up.
pub struct VethPair {
    pub a: String,
    pub b: String,
}

impl VethPair {
    /// Creates `a` in `ns_a` with `addr_a` (CIDR notation) and `b` in `ns_b` with `addr_b`.
    pub fn new(ns_a: &Netns, addr_a: &str, ns_b: &Netns, addr_b: &str) -> Self {
        let pair = Self {
            a: unique_name("cdta"),
            b: unique_name("cdtb"),
        };
        pair.create(ns_a, addr_a, ns_b, addr_b);
        pair
    }

    /// (Re)creates the pair under its names, addressed and up: after [`VethPair::delete`],
    /// the same interfaces come back as new devices (new ifindex, new MAC), as a replugged
    /// NIC or a recreated container veth does.
    pub fn create(&self, ns_a: &Netns, addr_a: &str, ns_b: &Netns, addr_b: &str) {
        self.add_link(ns_a, ns_b);
        self.configure(ns_a, addr_a, ns_b, addr_b);
    }

    /// Creates the pair under its names, without addresses and down.
    pub fn add_link(&self, ns_a: &Netns, ns_b: &Netns) {
        ip(&[
            "link", "add", &self.a, "netns", &ns_a.name, "type", "veth", "peer", "name", &self.b,
            "netns", &ns_b.name,
        ]);
    }

    /// Addresses both ends and sets them up.
    pub fn configure(&self, ns_a: &Netns, addr_a: &str, ns_b: &Netns, addr_b: &str) {
        for (ns, dev, addr) in [(ns_a, &self.a, addr_a), (ns_b, &self.b, addr_b)] {
            ns.exec_ok(&["ip", "addr", "add", addr, "dev", dev]);
            ns.exec_ok(&["ip", "link", "set", dev, "up"]);
        }
    }

    /// Deletes the pair (both ends) through its end `a`, which lives in `ns_a`.
    pub fn delete(&self, ns_a: &Netns) {
        ip(&["-n", &ns_a.name, "link", "del", &self.a]);
    }
}

/// Runs `f` on a thread that has entered the network namespace `ns` (interface names and
/// netlink then resolve there). BPF objects created or used in `f` are process-wide.
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/var/run/netns/{}", ns.name)).expect("open netns");
            // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}
