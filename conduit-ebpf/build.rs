/// Rebuild when bpf-linker changes (it is not a cargo dependency). A missing bpf-linker is an
/// error with the fix in it, rather than an obscure linker failure later.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => panic!("bpf-linker not found ({err}): run ./xtask/bootstrap.sh"),
    }
}
