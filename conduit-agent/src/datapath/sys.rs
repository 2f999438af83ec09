//! The bpf(2) map commands that aya 0.16 does not offer (BPF_MAP_*_BATCH), next to the
//! per-element commands they fall back to, on a map's fd with typed key and value slices;
//! and the XDP link's interface, which aya's `LinkInfo` does not expose.
//!
//! Every function is one syscall; chunking, fallback and error reporting are the caller's
//! (`apply.rs`). The map commands take a [`MapFd`], whose key and value types were checked
//! against the map: that check is what makes them safe functions.
use std::{
    io,
    marker::PhantomData,
    mem::{offset_of, size_of},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use aya::Pod;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `elem_flags`/`flags` for updates: create or replace.
pub const BPF_ANY: u64 = 0;

/// The kernel's "operation not supported" for a map type without batch ops (`ENOTSUPP`, a
/// kernel-internal errno that reaches userspace from `bpf_map_do_batch`).
pub const ENOTSUPP: i32 = 524;

/// The member of `union bpf_attr` for the per-element commands (include/uapi/linux/bpf.h):
/// `struct { __u32 map_fd; __aligned_u64 key; union { __aligned_u64 value, next_key; };
/// __u64 flags; }`.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    /// `value`, or `next_key` for BPF_MAP_GET_NEXT_KEY.
    value: u64,
    flags: u64,
}
const _: () = {
    assert!(size_of::<ElemAttr>() == 32);
    assert!(offset_of!(ElemAttr, key) == 8);
    assert!(offset_of!(ElemAttr, value) == 16);
    assert!(offset_of!(ElemAttr, flags) == 24);
};

/// The member of `union bpf_attr` for BPF_MAP_*_BATCH (include/uapi/linux/bpf.h):
/// `struct { __aligned_u64 in_batch, out_batch, keys, values; __u32 count, map_fd;
/// __u64 elem_flags, flags; } batch`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    /// Start of a lookup batch (NULL: from the beginning).
    in_batch: u64,
    /// Where the kernel writes the position to continue a lookup from.
    out_batch: u64,
    keys: u64,
    values: u64,
    /// In: elements in `keys`/`values`. Out: elements processed (also on error).
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}
const _: () = {
    assert!(size_of::<BatchAttr>() == 56);
    assert!(offset_of!(BatchAttr, out_batch) == 8);
    assert!(offset_of!(BatchAttr, keys) == 16);
    assert!(offset_of!(BatchAttr, values) == 24);
    assert!(offset_of!(BatchAttr, count) == 32);
    assert!(offset_of!(BatchAttr, map_fd) == 36);
    assert!(offset_of!(BatchAttr, elem_flags) == 40);
    assert!(offset_of!(BatchAttr, flags) == 48);
};

fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<()> {
    bpf_rc(cmd, attr).map(drop)
}

/// [`bpf`], returning what the call returned (a new fd for BPF_OBJ_GET).
fn bpf_rc<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a fully initialised `bpf_attr` member of the size passed (the kernel
    // zero-extends shorter attrs); every pointer in it was taken from a live slice or buffer
    // of the caller that outlives this call and is as long as the count, length or map sizes
    // it announces.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<A>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd() as u32
}

/// A map's fd with the key and value types that the commands below read and write. Made only
/// by [`MapFd::check`], which holds the types' sizes to the map's own (and refuses per-CPU
/// maps, whose values the kernel copies once per CPU): the kernel copies exactly the map's key
/// and value sizes through the pointers these commands pass, so with a checked `MapFd` every
/// copy stays within the caller's keys, values and buffers.
pub struct MapFd<'a, K, V> {
    fd: BorrowedFd<'a>,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for MapFd<'_, K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for MapFd<'_, K, V> {}

/// Why [`MapFd::check`] refused a map.
#[derive(Debug, thiserror::Error)]
pub enum Mismatch {
    #[error("reading the map's info: {0}")]
    Info(#[from] aya::maps::MapError),
    #[error("its {what} is {expected} bytes, the agent's type {size}")]
    Size {
        what: &'static str,
        size: usize,
        expected: u32,
    },
    #[error("it is a per-CPU map")]
    PerCpu,
}

impl<'a, K: Pod, V: Pod> MapFd<'a, K, V> {
    /// `map`, if its key and value sizes are `K`'s and `V`'s and it is not per-CPU.
    pub fn check(map: &'a aya::maps::MapData) -> Result<Self, Mismatch> {
        use aya::maps::MapType::*;
        let info = map.info()?;
        if matches!(
            info.map_type()?,
            PerCpuHash | PerCpuArray | LruPerCpuHash | PerCpuCgroupStorage
        ) {
            return Err(Mismatch::PerCpu);
        }
        for (size, expected, what) in [
            (size_of::<K>(), info.key_size(), "key"),
            (size_of::<V>(), info.value_size(), "value"),
        ] {
            if size != expected as usize {
                return Err(Mismatch::Size {
                    what,
                    size,
                    expected,
                });
            }
        }
        Ok(Self {
            fd: map.fd().as_fd(),
            types: PhantomData,
        })
    }

    fn raw(self) -> u32 {
        fd_u32(self.fd)
    }
}

/// A value of all-zero bytes: a buffer for the kernel to fill.
pub fn zeroed<T: Pod>() -> T {
    // SAFETY: `Pod` promises that every byte sequence of `T`'s size (initialized, as zeroes
    // are) is a valid `T`, and that `T` has no padding.
    unsafe { std::mem::zeroed() }
}

/// A batch call that stopped early: how many elements it processed first, and why.
#[derive(Debug)]
pub struct Partial {
    pub done: usize,
    pub error: io::Error,
}

/// BPF_MAP_UPDATE_BATCH: `keys[i] → values[i]` for every `i`, in one call.
pub fn update_batch<K: Pod, V: Pod>(
    m: MapFd<'_, K, V>,
    keys: &[K],
    values: &[V],
    elem_flags: u64,
) -> Result<(), Partial> {
    assert_eq!(keys.len(), values.len());
    let mut a = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: m.raw(),
        elem_flags,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_BATCH, &mut a).map_err(|error| Partial {
        done: a.count as usize,
        error,
    })
}

/// BPF_MAP_DELETE_BATCH: removes every key of `keys`, in one call. Stops at the first key
/// that is not in the map (ENOENT).
pub fn delete_batch<K: Pod, V: Pod>(m: MapFd<'_, K, V>, keys: &[K]) -> Result<(), Partial> {
    let mut a = BatchAttr {
        keys: keys.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: m.raw(),
        ..Default::default()
    };
    bpf(BPF_MAP_DELETE_BATCH, &mut a).map_err(|error| Partial {
        done: a.count as usize,
        error,
    })
}

/// BPF_MAP_LOOKUP_BATCH: reads up to `keys.len()` entries, continuing from `token` when
/// `first` is false; the kernel writes where to continue into `token` (at least
/// `max(key size, 8)` bytes: a bucket index for hash maps, a key for the generic
/// implementation). Returns the number of entries read and whether the map has more.
pub fn lookup_batch<K: Pod, V: Pod>(
    m: MapFd<'_, K, V>,
    token: &mut [u8],
    first: bool,
    keys: &mut [K],
    values: &mut [V],
) -> Result<(usize, bool), Partial> {
    read_batch(BPF_MAP_LOOKUP_BATCH, m, token, first, keys, values)
}

/// BPF_MAP_LOOKUP_AND_DELETE_BATCH: [`lookup_batch`], and the entries read are deleted in the
/// same call (a hash map's bucket at a time, under its lock: an entry is read and removed
/// at once). For a hash map, `keys.len()` must hold the largest bucket (ENOSPC otherwise).
pub fn lookup_and_delete_batch<K: Pod, V: Pod>(
    m: MapFd<'_, K, V>,
    token: &mut [u8],
    first: bool,
    keys: &mut [K],
    values: &mut [V],
) -> Result<(usize, bool), Partial> {
    read_batch(
        BPF_MAP_LOOKUP_AND_DELETE_BATCH,
        m,
        token,
        first,
        keys,
        values,
    )
}

fn read_batch<K: Pod, V: Pod>(
    cmd: libc::c_long,
    m: MapFd<'_, K, V>,
    token: &mut [u8],
    first: bool,
    keys: &mut [K],
    values: &mut [V],
) -> Result<(usize, bool), Partial> {
    assert_eq!(keys.len(), values.len());
    assert!(token.len() >= size_of::<K>().max(8));
    // The kernel reads in_batch before it writes out_batch, so one buffer serves both.
    let tok = token.as_mut_ptr() as u64;
    let mut a = BatchAttr {
        in_batch: if first { 0 } else { tok },
        out_batch: tok,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: keys.len() as u32,
        map_fd: m.raw(),
        ..Default::default()
    };
    match bpf(cmd, &mut a) {
        Ok(()) => Ok((a.count as usize, true)),
        // ENOENT: the end of the map; `count` entries were still read.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok((a.count as usize, false)),
        Err(error) => Err(Partial {
            done: a.count as usize,
            error,
        }),
    }
}

/// BPF_MAP_UPDATE_ELEM.
pub fn update_elem<K: Pod, V: Pod>(
    m: MapFd<'_, K, V>,
    key: &K,
    value: &V,
    flags: u64,
) -> io::Result<()> {
    let mut a = ElemAttr {
        map_fd: m.raw(),
        key: std::ptr::from_ref(key) as u64,
        value: std::ptr::from_ref(value) as u64,
        flags,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut a)
}

/// BPF_MAP_DELETE_ELEM.
pub fn delete_elem<K: Pod, V: Pod>(m: MapFd<'_, K, V>, key: &K) -> io::Result<()> {
    let mut a = ElemAttr {
        map_fd: m.raw(),
        key: std::ptr::from_ref(key) as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_DELETE_ELEM, &mut a)
}

/// BPF_MAP_LOOKUP_ELEM.
pub fn lookup_elem<K: Pod, V: Pod>(m: MapFd<'_, K, V>, key: &K, value: &mut V) -> io::Result<()> {
    let mut a = ElemAttr {
        map_fd: m.raw(),
        key: std::ptr::from_ref(key) as u64,
        value: std::ptr::from_mut(value) as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_LOOKUP_ELEM, &mut a)
}

/// BPF_MAP_GET_NEXT_KEY: the key after `key` (the first key for `None`); `None` at the end.
pub fn next_key<K: Pod, V: Pod>(
    m: MapFd<'_, K, V>,
    key: Option<&K>,
    next: &mut K,
) -> io::Result<bool> {
    let mut a = ElemAttr {
        map_fd: m.raw(),
        key: key.map_or(0, |k| std::ptr::from_ref(k) as u64),
        value: std::ptr::from_mut(next) as u64,
        ..Default::default()
    };
    match bpf(BPF_MAP_GET_NEXT_KEY, &mut a) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `enum bpf_link_type`'s BPF_LINK_TYPE_XDP.
const BPF_LINK_TYPE_XDP: u32 = 6;

/// The member of `union bpf_attr` for BPF_OBJ_GET: `struct { __aligned_u64 pathname;
/// __u32 bpf_fd; __u32 file_flags; }` (the `path_fd` of newer kernels left zero).
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}
const _: () = assert!(size_of::<ObjAttr>() == 16);

/// The member of `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD: `struct { __u32 bpf_fd;
/// __u32 info_len; __aligned_u64 info; } info`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}
const _: () = assert!(size_of::<InfoAttr>() == 16);

/// The head of `struct bpf_link_info` up to its XDP member: `__u32 type, id, prog_id;` then
/// the union (8-byte aligned), whose `xdp` member is `struct { __u32 ifindex; }`. The kernel
/// fills as much of the struct as `info_len` announces.
#[repr(C)]
#[derive(Default)]
struct XdpLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    _pad2: u32,
}
const _: () = {
    assert!(size_of::<XdpLinkInfo>() == 24);
    assert!(offset_of!(XdpLinkInfo, ifindex) == 16);
};

/// BPF_OBJ_GET: opens the BPF object pinned at `path`. Written here with
/// [`xdp_link_ifindex`] because aya 0.16 hides both what they need: `FdLink` keeps its
/// descriptor private and `LinkInfo` the XDP member of `bpf_link_info` (the ifindex).
pub fn obj_get(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut a = ObjAttr {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf_rc(BPF_OBJ_GET, &mut a)?;
    // SAFETY: BPF_OBJ_GET returned a new file descriptor, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The ifindex of the device the XDP link `fd` is attached to; 0 when the link is defunct
/// (its device was unregistered: the kernel detached the program then, and a link never
/// moves to another device).
pub fn xdp_link_ifindex(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut info = XdpLinkInfo::default();
    let mut a = InfoAttr {
        bpf_fd: fd_u32(fd),
        info_len: size_of::<XdpLinkInfo>() as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    if info.link_type != BPF_LINK_TYPE_XDP {
        return Err(io::Error::other(format!(
            "not an XDP link (link type {})",
            info.link_type
        )));
    }
    Ok(info.ifindex)
}
