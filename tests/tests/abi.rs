//! The built object's maps match the `conduit-common` ABI: names, types and key/value sizes.
//! No root needed: this parses the ELF object embedded in the agent.
use std::mem::size_of;

use conduit_common as abi;

const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;

#[test]
fn object_maps_match_common_types() {
    let object = conduit_agent::datapath::object();
    assert!(
        !object.is_empty(),
        "the agent was built without its XDP object: run ./xtask/bootstrap.sh"
    );
    let obj = aya_obj::Object::parse(object).expect("parse the XDP object");
    // (name, map type, key size, value size, max entries)
    let expected: &[(&str, u32, usize, usize, u32)] = &[(
        abi::MAP_TOTALS,
        BPF_MAP_TYPE_PERCPU_ARRAY,
        size_of::<u32>(),
        size_of::<abi::Counter>(),
        abi::TOTALS_LEN,
    )];
    for &(name, ty, key, value, max) in expected {
        assert!(
            name.len() <= 15,
            "map name {name} longer than the kernel's 15 bytes"
        );
        let m = obj
            .maps
            .get(name)
            .unwrap_or_else(|| panic!("map {name} missing from the object"));
        assert_eq!(m.map_type(), ty, "{name}: map type");
        assert_eq!(m.key_size() as usize, key, "{name}: key size");
        assert_eq!(m.value_size() as usize, value, "{name}: value size");
        assert_eq!(m.max_entries(), max, "{name}: max entries");
    }
    // Every map of the object is described above: none escapes the check.
    let mut names: Vec<&str> = obj
        .maps
        .keys()
        .map(String::as_str)
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort_unstable();
    let mut want: Vec<&str> = expected.iter().map(|e| e.0).collect();
    want.sort_unstable();
    assert_eq!(names, want, "maps in the object vs. maps in the ABI table");
    assert!(
        obj.programs.contains_key(abi::PROGRAM_NAME),
        "program {} missing",
        abi::PROGRAM_NAME
    );
}
