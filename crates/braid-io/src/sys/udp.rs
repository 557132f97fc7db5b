//! The one socket option of the UDP transport that no safe crate sets: `UDP_GRO` (udp(7)),
//! switched off when the config says so (quinn-udp switches it on unconditionally), and, for
//! tests only, `SO_NO_CHECK`, which makes the kernel refuse UDP GSO sends with `EINVAL`
//! (`udp_send_skb`), a real way to drive the GSO fallback.
//!
//! What this file owns: those `setsockopt` calls. What it does not: the transport
//! ([`crate::udp`]).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `setsockopt(fd, level, name, &value, sizeof(int))`.
fn set_int_option(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>())
        .expect("invariant: size of int fits socklen_t");
    // SAFETY: `fd` is a live descriptor for the duration of the borrow; the option value is a
    // `c_int` on our stack, valid for `len` bytes for the whole call, and the kernel only reads
    // it. Errors are reported through the return value, which is checked.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turn UDP generic receive offload on or off on a UDP socket (`SOL_UDP`/`UDP_GRO`).
pub(crate) fn set_udp_gro(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    set_int_option(fd, libc::SOL_UDP, libc::UDP_GRO, libc::c_int::from(on))
}

/// `SO_NO_CHECK`: send UDP without a checksum. The kernel refuses GSO sends on such a socket
/// (`EINVAL`), while plain sends still work: tests use it to exercise the GSO fallback.
#[cfg(test)]
pub(crate) fn set_no_check_tx(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    set_int_option(
        fd,
        libc::SOL_SOCKET,
        libc::SO_NO_CHECK,
        libc::c_int::from(on),
    )
}
