//! The deployment test: build the Debian package, install it with apt, run the Ansible role
//! against this machine twice (the second run changes nothing) and once with a broken policy
//! (the play fails, the live policy stays), with the agent started exactly as the systemd
//! unit starts it (systemd itself does not run as PID 1 on this machine), enforcing on
//! network namespaces this test creates. The role signs the policy on the controller and the
//! agent loads only signed policies: one written on the gateway without a valid signature is
//! refused and the live policy stays. Then everything is removed again.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

struct Cleanup {
    netns: Vec<String>,
    agent: Option<Child>,
    dir: std::path::PathBuf,
    /// Directories the test creates outside its own, removed at the end.
    created: Vec<&'static str>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            crate::signal(&a, rustix::process::Signal::TERM);
            let _ = a.wait();
        }
        // The unit runs with --keep-on-exit: remove what the agent left pinned.
        let _ = Command::new("/usr/bin/conduit")
            .arg("detach")
            .stdout(Stdio::null())
            .status();
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("apt-get")
            .args(["purge", "-y", "-qq", "conduit"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all("/etc/conduit");
        let _ = std::fs::remove_dir_all("/var/cache/conduit");
        let _ = std::fs::remove_dir_all(&self.dir);
        for d in &self.created {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| args.join(" "))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the playbook; returns (succeeded, changed count, output).
fn play(dir: &Path, extra: &[&str]) -> Result<(bool, u32, String)> {
    let out = Command::new("ansible-playbook")
        .args(["-i", "localhost,", "-c", "local"])
        .arg(dir.join("play.yml"))
        .args(extra)
        .env(
            "ANSIBLE_ROLES_PATH",
            crate::workspace_root().join("deploy/ansible/roles"),
        )
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .context("ansible-playbook (Debian package ansible)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let changed = text
        .lines()
        .find(|l| l.starts_with("localhost") && l.contains("changed="))
        .and_then(|l| l.split("changed=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX);
    Ok((out.status.success(), changed, text))
}

/// The unit's command line, with /etc/default/conduit's CONDUIT_ARGS substituted.
fn unit_command_line() -> Result<Vec<String>> {
    let unit = std::fs::read_to_string("/lib/systemd/system/conduit.service")?;
    let exec = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecStart="))
        .context("no ExecStart in the installed unit")?
        .trim_start_matches(['-', '@', '+', '!']);
    let default = std::fs::read_to_string("/etc/default/conduit")?;
    let args = default
        .lines()
        .find_map(|l| l.trim().strip_prefix("CONDUIT_ARGS="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default();
    Ok(exec
        .replace("${CONDUIT_ARGS}", &args)
        .replace("$CONDUIT_ARGS", &args)
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

fn policy(allow_ping: bool, broken: bool) -> String {
    let conduits = if allow_ping {
        "conduits:\n  - name: ping\n    from: clients\n    to: gateway\n    security_level: 2\n    rules: [{ proto: icmp, icmp_types: [echo-request] }]\n"
    } else {
        "conduits: []\n"
    };
    let sl = if broken { "9" } else { "2" };
    format!(
        "version: 1\nsite: deploy-test\nzones:\n  - name: clients\n    security_level: 1\n    assets: [{{ name: client, ip: 10.204.0.1 }}]\n  - name: gateway\n    security_level: {sl}\n    assets: [{{ name: gw, ip: 10.204.0.2 }}]\n{conduits}"
    )
}

pub fn test() -> Result<()> {
    let mut passed = 0;
    let mut failed = 0;
    let mut check = |ok: bool, what: &str| {
        println!("deploy: {what}: {}", if ok { "ok" } else { "FAILED" });
        if ok { passed += 1 } else { failed += 1 }
    };
    let tag = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(format!("conduit-deploy-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let created = ["/var/log/conduit", "/run/conduit"]
        .into_iter()
        .filter(|d| !Path::new(d).exists())
        .collect();
    let mut c = Cleanup {
        netns: vec![],
        agent: None,
        dir: dir.clone(),
        created,
    };
    let deb = crate::package()?;
    println!("deploy: package {}", deb.display());
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?
        .success();
    check(installed, "apt install ./conduit_*.deb");
    if !installed {
        bail!("the package does not install");
    }
    check(
        run(&["/usr/bin/conduit", "--version"]).is_ok_and(|v| v.contains("conduit")),
        "the installed binary runs",
    );
    for f in [
        "/usr/share/man/man1/conduit.1.gz",
        "/usr/share/bash-completion/completions/conduit",
        "/usr/share/conduit/policies/purdue-plant.yaml",
        "/lib/systemd/system/conduit.service",
    ] {
        check(Path::new(f).exists(), &format!("package ships {f}"));
    }
    let verify = Command::new("systemd-analyze")
        .args(["verify", "/lib/systemd/system/conduit.service"])
        .output()?;
    let complaints: Vec<String> = String::from_utf8_lossy(&verify.stderr)
        .lines()
        .filter(|l| l.contains("conduit.service"))
        .map(str::to_owned)
        .collect();
    check(
        verify.status.success() && complaints.is_empty(),
        &format!("systemd-analyze verify conduit.service {complaints:?}"),
    );

    // The gateway and a client, in namespaces of this test.
    let (gw, client) = (
        format!("cdt-deploy-{tag}-gw"),
        format!("cdt-deploy-{tag}-client"),
    );
    for ns in [&gw, &client] {
        run(&["ip", "netns", "add", ns])?;
        c.netns.push(ns.clone());
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    }
    let (if_gw, if_cl) = (format!("cdtdg{tag}"), format!("cdtdc{tag}"));
    run(&[
        "ip", "link", "add", &if_cl, "netns", &client, "type", "veth", "peer", "name", &if_gw,
        "netns", &gw,
    ])?;
    for (ns, dev, addr) in [
        (&client, &if_cl, "10.204.0.1/24"),
        (&gw, &if_gw, "10.204.0.2/24"),
    ] {
        run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev])?;
        run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
    }

    // The controller's signing key (this machine is the controller too).
    let key = dir.join("signing");
    run(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        "ops@deploy.test",
        "-f",
    ]
    .into_iter()
    .chain([key.to_str().context("temp dir path")?])
    .collect::<Vec<_>>())?;
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    let allowed = format!("ops@deploy.test {}\n", public.join(" "));

    // The playbook: this machine is the gateway; the agent is not under systemd here.
    std::fs::write(dir.join("good.yaml.j2"), policy(true, false))?;
    std::fs::write(dir.join("broken.yaml.j2"), policy(true, true))?;
    std::fs::write(
        dir.join("play.yml"),
        format!(
            "- hosts: localhost\n  gather_facts: false\n  roles:\n    - role: conduit\n      vars:\n        conduit_deb: {}\n        conduit_policy_template: \"{{{{ policy_template | default('{}') }}}}\"\n        conduit_interfaces: [{if_gw}]\n        conduit_service_manager: none\n        conduit_signing_key: {}\n        conduit_allowed_signers: {:?}\n",
            deb.display(),
            dir.join("good.yaml.j2").display(),
            key.display(),
            allowed,
        ),
    )?;
    let (ok, changed, out) = play(&dir, &[])?;
    check(
        ok && changed > 0 && changed != u32::MAX,
        &format!("first run changes the gateway (changed={changed})"),
    );
    if !ok {
        println!("{out}");
    }
    std::fs::create_dir_all("/var/log/conduit")?;
    let cmd = unit_command_line()?;
    println!(
        "deploy: starting the unit's command line: {}",
        cmd.join(" ")
    );
    let agent = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{gw}"))
        .arg("--")
        .args(&cmd)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log"))?)
        .spawn()?;
    c.agent = Some(agent);
    let mut healthy = false;
    for _ in 0..100 {
        let h = Command::new("ip")
            .args([
                "netns",
                "exec",
                &gw,
                "curl",
                "-s",
                "-m",
                "1",
                "http://127.0.0.1:9642/healthz",
            ])
            .output()?;
        if String::from_utf8_lossy(&h.stdout).contains("ok") {
            healthy = true;
            break;
        }
        sleep(Duration::from_millis(100));
    }
    check(healthy, "the agent runs with the installed policy");
    let ping = |n: &str| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &client,
                "ping",
                "-c",
                n,
                "-i",
                "0.1",
                "-W",
                "1",
                "10.204.0.2",
            ])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let nc = Command::new("ip")
        .args([
            "netns",
            "exec",
            &client,
            "nc",
            "-z",
            "-w",
            "1",
            "10.204.0.2",
            "22222",
        ])
        .status()?
        .success();
    check(
        ping("2") && !nc,
        "the policy is enforced (ping passes, other traffic does not)",
    );
    let metric = |name: &str| -> String {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &gw,
                "curl",
                "-s",
                "-m",
                "1",
                "http://127.0.0.1:9642/metrics",
            ])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find(|l| l.starts_with(name))
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    let generation = || metric("conduit_policy_generation ");
    check(
        metric("conduit_policy_info{").contains("signer=\"ops@deploy.test SHA256:"),
        "the live policy is the one the controller signed (conduit_policy_info{signer})",
    );
    let g1 = generation();
    let (ok, changed, out) = play(&dir, &[])?;
    check(
        ok && changed == 0,
        &format!("second run changes nothing (changed={changed})"),
    );
    if !(ok && changed == 0) {
        println!("{out}");
    }
    let live = std::fs::read("/etc/conduit/policy.yaml")?;
    let (ok, _, _) = play(
        &dir,
        &[
            "-e",
            &format!("policy_template={}", dir.join("broken.yaml.j2").display()),
        ],
    )?;
    sleep(Duration::from_millis(1500));
    check(!ok, "a broken policy fails the play");
    check(
        std::fs::read("/etc/conduit/policy.yaml")? == live,
        "the broken policy never reaches the gateway",
    );
    check(
        generation() == g1 && ping("2"),
        "the running policy is untouched",
    );
    // Someone on the gateway edits the policy (a policy that denies ping) around the
    // controller: its signature no longer matches, the agent refuses it, the live one stays.
    let failures = || metric("conduit_policy_reloads_total{result=\"failure\"}");
    let failed_before = failures();
    std::fs::write("/etc/conduit/policy.yaml", policy(false, false))?;
    sleep(Duration::from_millis(1500));
    check(
        failures() != failed_before && generation() == g1 && ping("2"),
        "a policy edited on the gateway without a valid signature is refused and the live one stays",
    );
    std::fs::write("/etc/conduit/policy.yaml", &live)?;
    check(
        run(&[
            "/usr/bin/conduit",
            "changelog",
            "verify",
            "/var/log/conduit/changelog.jsonl",
        ])
        .is_ok_and(|o| o.contains(": intact: ")),
        "the change log records the signed policy, and its chain verifies",
    );
    drop(c);
    println!("deploy: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("the deployment test failed");
    }
    Ok(())
}
