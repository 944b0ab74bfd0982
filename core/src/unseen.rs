//! Syscalls of the mount family newer than the host's libseccomp: a seccomp profile cannot name
//! them, so the supervisor's filter (built by name) never traps them and a permissive profile
//! lets them through. `open_tree_attr` (Linux 6.15) clones a mount and changes its attributes
//! in one call: a non-recursive clone of /proc without the emulated files, or a clone of a
//! read-only path made writable, without the supervisor seeing either. A small filter of our
//! own, by number, answers ENOSYS as an older kernel would; callers (libmount) fall back to
//! `open_tree` and `mount_setattr`, which are supervised.

use std::io;

/// open_tree_attr: one number on every architecture (the unified syscall table from 424 on).
const NR_OPEN_TREE_ATTR: u32 = 467;
/// x32 syscalls carry this bit in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// A BPF opcode (u32 in libc) as a `sock_filter` holds it (u16): every opcode fits in 16 bits.
#[allow(clippy::cast_possible_truncation)]
const fn opcode(bits: u32) -> u16 {
    bits as u16
}

/// Install the filter on the calling thread (inherited by its children and kept across
/// execve). Needs CAP_SYS_ADMIN in the caller's user namespace or no_new_privs.
pub fn refuse_unsupervised_mount_syscalls() -> io::Result<()> {
    const LD_W_ABS: u16 = opcode(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS);
    const AND_K: u16 = opcode(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K);
    const JEQ_K: u16 = opcode(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K);
    const RET_K: u16 = opcode(libc::BPF_RET | libc::BPF_K);
    let stmt = |code, k| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let filter = [
        // seccomp_data.nr, without the x32 bit.
        stmt(LD_W_ABS, 0),
        stmt(AND_K, !X32_SYSCALL_BIT),
        libc::sock_filter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: NR_OPEN_TREE_ATTR,
        },
        stmt(RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(RET_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(io::Error::other)?,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: seccomp(SET_MODE_FILTER) reads the program we own, which outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
