//! Signed policies (SPEC §7) with the real OpenSSH tools: keys made by `ssh-keygen`, policies
//! signed by `ssh-keygen -Y sign`, judged by `conduit check --allowed-signers` and, on the very
//! same files, by `ssh-keygen -Y find-principals` + `ssh-keygen -Y verify` (the reference):
//! both must accept and refuse the same cases. No root needed.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_conduit");
const NS: &str = "conduit-policy";

/// A directory of its own under the system temp dir, removed on drop (also when a test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "conduit-sig-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn policy_text() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/purdue-plant.yaml"),
    )
    .unwrap()
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A new key pair `dir/name` (private) and `dir/name.pub`; the public key's line.
fn keygen(dir: &Path, name: &str, kind: &[&str]) -> String {
    let key = dir.join(name);
    let (code, _, err) = run(Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", name])
        .args(kind)
        .arg("-f")
        .arg(&key));
    assert_eq!(code, 0, "ssh-keygen: {err}");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    // "TYPE BASE64 COMMENT": the allowed-signers file takes TYPE BASE64.
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `ssh-keygen -Y sign -f KEY -n NAMESPACE FILE`, which writes FILE.sig.
fn sign(dir: &Path, key: &str, namespace: &str, file: &Path) {
    let _ = std::fs::remove_file(sig_of(file));
    let (code, _, err) = run(Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", namespace, "-f"])
        .arg(dir.join(key))
        .arg(file));
    assert_eq!(code, 0, "ssh-keygen -Y sign: {err}");
    assert!(sig_of(file).exists());
}

fn sig_of(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sig", file.display()))
}

/// The reference: `ssh-keygen -Y find-principals` names the signer (checking its key and
/// validity), then `ssh-keygen -Y verify -I PRINCIPAL -n conduit-policy` checks the signature,
/// the namespace and the line's options. Some(principal) when both accept.
fn reference(allowed: &Path, policy: &Path) -> Option<String> {
    let sig = sig_of(policy);
    if !sig.exists() {
        return None;
    }
    let (code, out, _) = run(Command::new("ssh-keygen")
        .args(["-Y", "find-principals", "-f"])
        .arg(allowed)
        .arg("-s")
        .arg(&sig));
    if code != 0 {
        return None;
    }
    let principal = out.lines().next()?.trim().to_owned();
    let status = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", NS, "-f"])
        .arg(allowed)
        .args(["-I", &principal, "-s"])
        .arg(&sig)
        .stdin(std::fs::File::open(policy).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    status.success().then_some(principal)
}

/// `conduit check --allowed-signers ALLOWED POLICY --format json`: (exit status, JSON).
fn check(allowed: &Path, policy: &Path) -> (i32, Value) {
    let (code, out, err) = run(Command::new(BIN)
        .arg("check")
        .arg("--allowed-signers")
        .arg(allowed)
        .arg(policy)
        .args(["--format", "json"]));
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, v)
}

struct Keys {
    dir: TempDir,
    allowed: PathBuf,
}

/// Keys of every kind the allowed-signers file lists, and some it does not (or not as they
/// would need).
fn keys() -> Keys {
    let dir = TempDir::new();
    let d = &dir.0;
    let ed = keygen(d, "ops", &["-t", "ed25519"]);
    let ec = keygen(d, "eng", &["-t", "ecdsa", "-b", "256"]);
    let ec384 = keygen(d, "eng384", &["-t", "ecdsa", "-b", "384"]);
    let rsa = keygen(d, "rsa", &["-t", "rsa", "-b", "2048"]);
    let old = keygen(d, "old", &["-t", "ed25519"]);
    let future = keygen(d, "future", &["-t", "ed25519"]);
    let fileonly = keygen(d, "fileonly", &["-t", "ed25519"]);
    let local = keygen(d, "local", &["-t", "ed25519"]);
    keygen(d, "stranger", &["-t", "ed25519"]);
    let allowed = d.join("allowed_signers");
    std::fs::write(
        &allowed,
        format!(
            "# who may sign the plant's policy\n\
             ops@plant.example {ed} the operations lead\n\
             eng@plant.example namespaces=\"conduit-policy,file\" {ec}\n\
             eng384@plant.example {ec384}\n\
             rsa@plant.example {rsa}\n\
             old@plant.example valid-before=\"20200101Z\" {old}\n\
             future@plant.example valid-after=\"29990101Z\" {future}\n\
             fileonly@plant.example namespaces=\"file\" {fileonly}\n\
             local@plant.example valid-after=\"20200101\",valid-before=\"299001011200\" {local}\n"
        ),
    )
    .unwrap();
    Keys { dir, allowed }
}

/// A case: its own directory with policy.yaml (and a signature as the case makes it).
fn case(k: &Keys, name: &str, make: impl FnOnce(&Path, &Path)) -> PathBuf {
    let dir = k.dir.0.join(format!("case-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, policy_text()).unwrap();
    make(&k.dir.0, &policy);
    policy
}

#[test]
fn conduit_and_ssh_keygen_agree_on_every_case() {
    let k = keys();
    // (case, who signed it when it is accepted, what the refusal says)
    type Make = Box<dyn FnOnce(&Path, &Path)>;
    let cases: Vec<(&str, Option<&str>, &str, Make)> = vec![
        (
            "ed25519",
            Some("ops@plant.example"),
            "",
            Box::new(|d, p| sign(d, "ops", NS, p)),
        ),
        (
            "ecdsa-p256",
            Some("eng@plant.example"),
            "",
            Box::new(|d, p| sign(d, "eng", NS, p)),
        ),
        (
            "ecdsa-p384",
            Some("eng384@plant.example"),
            "",
            Box::new(|d, p| sign(d, "eng384", NS, p)),
        ),
        (
            "rsa",
            Some("rsa@plant.example"),
            "",
            Box::new(|d, p| sign(d, "rsa", NS, p)),
        ),
        (
            "local-time-window",
            Some("local@plant.example"),
            "",
            Box::new(|d, p| sign(d, "local", NS, p)),
        ),
        ("unsigned", None, "unsigned", Box::new(|_, _| {})),
        (
            "one-byte-changed",
            None,
            "does not match",
            Box::new(|d, p| {
                sign(d, "ops", NS, p);
                // One letter of the first comment: the policy itself stays valid.
                let mut b = std::fs::read(p).unwrap();
                let i = b.iter().position(|&c| c == b'P').unwrap();
                b[i] = b'p';
                std::fs::write(p, b).unwrap();
            }),
        ),
        (
            "byte-appended",
            None,
            "does not match",
            Box::new(|d, p| {
                sign(d, "ops", NS, p);
                let mut b = std::fs::read(p).unwrap();
                b.extend_from_slice(b"# an innocent comment\n");
                std::fs::write(p, b).unwrap();
            }),
        ),
        (
            "wrong-namespace",
            None,
            "namespace \"other\"",
            Box::new(|d, p| sign(d, "ops", "other", p)),
        ),
        (
            "unknown-key",
            None,
            "not in the allowed signers file",
            Box::new(|d, p| sign(d, "stranger", NS, p)),
        ),
        (
            "expired",
            None,
            "expired",
            Box::new(|d, p| sign(d, "old", NS, p)),
        ),
        (
            "not-yet-valid",
            None,
            "not valid before",
            Box::new(|d, p| sign(d, "future", NS, p)),
        ),
        (
            "key-for-another-namespace",
            None,
            "namespaces=\"file\"",
            Box::new(|d, p| sign(d, "fileonly", NS, p)),
        ),
        (
            "signature-of-another-file",
            None,
            "does not match",
            Box::new(|d, p| {
                let other = p.with_file_name("other.yaml");
                std::fs::write(&other, "version: 1\n").unwrap();
                sign(d, "ops", NS, &other);
                std::fs::rename(sig_of(&other), sig_of(p)).unwrap();
            }),
        ),
        (
            "not-a-signature",
            None,
            "not an SSH signature",
            Box::new(|_, p| {
                std::fs::write(sig_of(p), "-----BEGIN SSH SIGNATURE-----\nAAAA\n").unwrap()
            }),
        ),
    ];
    for (name, signer, reason, make) in cases {
        let policy = case(&k, name, make);
        let reference = reference(&k.allowed, &policy);
        let (code, v) = check(&k.allowed, &policy);
        match signer {
            Some(who) => {
                assert_eq!(code, 0, "{name}: conduit check refused it: {v}");
                assert_eq!(v["valid"], true, "{name}: {v}");
                assert_eq!(v["signer"]["principal"], who, "{name}: {v}");
                assert!(v["signer"]["key"].as_str().unwrap().starts_with("SHA256:"));
                assert_eq!(
                    reference.as_deref(),
                    Some(who),
                    "{name}: ssh-keygen disagrees"
                );
            }
            None => {
                assert_eq!(code, 1, "{name}: conduit check accepted it: {v}");
                assert_eq!(v["valid"], false, "{name}: {v}");
                assert_eq!(v["signer"], Value::Null, "{name}: {v}");
                let errors = v["errors"].as_array().unwrap();
                assert_eq!(errors.len(), 1, "{name}: only the signature is wrong: {v}");
                let msg = errors[0]["message"].as_str().unwrap();
                assert!(msg.starts_with("signature: "), "{name}: {msg}");
                assert!(
                    msg.contains(reason),
                    "{name}: {msg:?} should say {reason:?}"
                );
                assert_eq!(
                    reference, None,
                    "{name}: ssh-keygen accepts what conduit refuses"
                );
            }
        }
    }
}

#[test]
fn the_signer_key_fingerprint_is_ssh_keygens() {
    let k = keys();
    let policy = case(&k, "fp", |d, p| sign(d, "ops", NS, p));
    let (_, v) = check(&k.allowed, &policy);
    let (_, out, _) = run(Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(k.dir.0.join("ops.pub")));
    let fp = out.split_whitespace().nth(1).unwrap();
    assert_eq!(v["signer"]["key"], fp);
}

#[test]
fn text_output_and_a_signature_elsewhere() {
    let k = keys();
    let policy = case(&k, "text", |d, p| sign(d, "ops", NS, p));
    let (code, _, err) = run(Command::new(BIN)
        .arg("check")
        .arg("--allowed-signers")
        .arg(&k.allowed)
        .arg(&policy));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("signed by ops@plant.example SHA256:"), "{err}");
    // A config-management `validate:` hook checks a temporary copy: --signature names the
    // signature.
    let copy = k.dir.0.join("tmp-copy-of-policy");
    std::fs::copy(&policy, &copy).unwrap();
    let (code, _, err) = run(Command::new(BIN)
        .arg("check")
        .arg("--allowed-signers")
        .arg(&k.allowed)
        .arg("--signature")
        .arg(sig_of(&policy))
        .arg(&copy));
    assert_eq!(code, 0, "{err}");
    // Unsigned: an error line as for any other error of the file.
    std::fs::remove_file(sig_of(&policy)).unwrap();
    let (code, out, _) = run(Command::new(BIN)
        .arg("check")
        .arg("--allowed-signers")
        .arg(&k.allowed)
        .arg(&policy));
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "{}:1:1: error: signature: unsigned",
            policy.display()
        )),
        "{out}"
    );
    // Without --allowed-signers nothing is asked of signatures.
    let (code, _, _) = run(Command::new(BIN).arg("check").arg(&policy));
    assert_eq!(code, 0);
}

#[test]
fn an_allowed_signers_file_conduit_cannot_use_is_refused_with_its_line() {
    let k = keys();
    let policy = case(&k, "file", |d, p| sign(d, "ops", NS, p));
    let ops = std::fs::read_to_string(k.dir.0.join("ops.pub")).unwrap();
    let ops: Vec<&str> = ops.split_whitespace().take(2).collect();
    let ops = ops.join(" ");
    let bad = k.dir.0.join("bad_signers");
    for (text, want) in [
        (
            format!("ops@plant.example {ops}\n*@plant.example cert-authority {ops}\n"),
            "line 2: `cert-authority`",
        ),
        (
            format!("ops@plant.example valid-before=\"2020\" {ops}\n"),
            "line 1: `valid-before=\"2020\"`",
        ),
        (
            format!("ops@plant.example verify-required {ops}\n"),
            "line 1: unknown option `verify-required`",
        ),
        (format!("ops@plant.example\n{ops}\n"), "line 1: no key"),
    ] {
        std::fs::write(&bad, &text).unwrap();
        let (code, v) = check(&bad, &policy);
        assert_eq!(code, 1, "{text}: {v}");
        let msg = v["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{text}: {msg}");
    }
    // A file that is not there: the check could not be made (2).
    let (code, _, err) = run(Command::new(BIN)
        .arg("check")
        .arg("--allowed-signers")
        .arg(k.dir.0.join("missing"))
        .arg(&policy));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot read the allowed signers file"),
        "{err}"
    );
}
