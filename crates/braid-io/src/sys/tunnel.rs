//! The batched system calls of the tunnel ports ([`crate::tunnel`]) that no safe crate
//! offers without an allocation per batch: `recvmmsg` that reports each datagram's source
//! address (a UDP socket on the VXLAN port, a raw `IPPROTO_GRE` socket), and `sendmmsg` of
//! whole IP packets on a raw `IPPROTO_RAW` socket, each to its own destination.
//!
//! What this file owns: those two calls, over stack arrays of at most [`MMSG_CHUNK`]
//! headers. What it does not: the sockets (opened with socket2 in [`crate::tunnel`]) and the
//! buffers (the caller's).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::zeroed;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Most messages per `recvmmsg` / `sendmmsg` call.
pub(crate) const MMSG_CHUNK: usize = 64;

/// One received datagram, as `recvmmsg` reported it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RecvFrom {
    /// Its length (`MSG_TRUNC`: may exceed the buffer).
    pub(crate) len: usize,
    /// The kernel cut it to fit the buffer.
    pub(crate) truncated: bool,
    /// Its source address (for a raw socket the port is 0).
    pub(crate) src: Option<SocketAddr>,
}

/// `socklen_t` of a type.
fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<T>()).expect("invariant: a sockaddr fits socklen_t")
}

/// Receive up to `bufs.len()` (at most [`MMSG_CHUNK`]) datagrams, one per buffer, without
/// blocking, with their source addresses. Returns how many arrived ("would block" is an
/// error of kind `WouldBlock`); `metas[i]` describes `bufs[i]`.
pub(crate) fn recv_from_batch(
    fd: BorrowedFd<'_>,
    bufs: &mut [IoSliceMut<'_>],
    metas: &mut [RecvFrom],
) -> io::Result<usize> {
    let n = bufs.len().min(metas.len()).min(MMSG_CHUNK);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths) and a valid
    // `sockaddr_storage`.
    let mut hdrs: [libc::mmsghdr; MMSG_CHUNK] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut names: [libc::sockaddr_storage; MMSG_CHUNK] = unsafe { zeroed() };
    for i in 0..n {
        let h = &mut hdrs[i].msg_hdr;
        // `IoSliceMut` is ABI-compatible with `iovec` on Unix (std's documented guarantee).
        h.msg_iov = std::ptr::from_mut(&mut bufs[i]).cast::<libc::iovec>();
        h.msg_iovlen = 1;
        h.msg_name = (&raw mut names[i]).cast::<libc::c_void>();
        h.msg_namelen = socklen_of::<libc::sockaddr_storage>();
    }
    let vlen = libc::c_uint::try_from(n).expect("invariant: n <= MMSG_CHUNK");
    // SAFETY: the first `n` headers point to `n` valid iovecs (each an exclusively borrowed
    // caller buffer, alive for the call) and to `n` `sockaddr_storage`s on this stack frame
    // with their true size; the kernel writes at most `iov_len` bytes into each buffer and
    // `msg_namelen` bytes into each name. No timeout pointer is passed.
    let rc = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            vlen,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = usize::try_from(rc)
        .expect("invariant: non-negative count")
        .min(n);
    for i in 0..got {
        let h = &hdrs[i].msg_hdr;
        metas[i] = RecvFrom {
            len: hdrs[i].msg_len as usize,
            truncated: h.msg_flags & libc::MSG_TRUNC != 0,
            src: read_sockaddr(&names[i], h.msg_namelen),
        };
    }
    Ok(got)
}

/// The IPv4/IPv6 address the kernel wrote into `storage` (`len` bytes), if it is one.
fn read_sockaddr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= socklen_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, and
            // `sockaddr_storage` is large and aligned enough for it; it is only read.
            let sin = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 if len >= socklen_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a `sockaddr_in6`.
            let sin6 = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be(sin6.sin6_port),
            ))
        }
        _ => None,
    }
}

/// Write `ip` (port 0) into `storage` as a `sockaddr_in` or `sockaddr_in6`; returns its
/// length.
fn write_sockaddr(storage: &mut libc::sockaddr_storage, ip: IpAddr) -> libc::socklen_t {
    match ip {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::sa_family_t::try_from(libc::AF_INET)
                    .expect("invariant: AF_INET fits sa_family_t"),
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is at least as large and as aligned as any socket
            // address, `sockaddr_in` included (its documented purpose); the write stays
            // inside `storage`, which is exclusively borrowed.
            unsafe {
                std::ptr::from_mut(storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin);
            }
            socklen_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::sa_family_t::try_from(libc::AF_INET6)
                    .expect("invariant: AF_INET6 fits sa_family_t"),
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for `sockaddr_in6`.
            unsafe {
                std::ptr::from_mut(storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6);
            }
            socklen_of::<libc::sockaddr_in6>()
        }
    }
}

/// Send up to `packets.len()` (at most [`MMSG_CHUNK`]) whole IP packets, `packets[i]` to
/// `dsts[i]`, without blocking, on a raw socket that takes the IP header from the packet
/// (`IPPROTO_RAW`: `IP_HDRINCL`). Returns how many the kernel took; an error means the FIRST
/// packet failed (sendmmsg(2): an error after a partial send is not reported; the next call
/// meets it on its first packet).
pub(crate) fn send_to_batch(
    fd: BorrowedFd<'_>,
    packets: &[IoSlice<'_>],
    dsts: &[IpAddr],
) -> io::Result<usize> {
    let n = packets.len().min(dsts.len()).min(MMSG_CHUNK);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths) and a valid
    // `sockaddr_storage`.
    let mut hdrs: [libc::mmsghdr; MMSG_CHUNK] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut names: [libc::sockaddr_storage; MMSG_CHUNK] = unsafe { zeroed() };
    for i in 0..n {
        let len = write_sockaddr(&mut names[i], dsts[i]);
        let h = &mut hdrs[i].msg_hdr;
        // `IoSlice` is ABI-compatible with `iovec` on Unix (std's documented guarantee); the
        // kernel only reads through it (the pointer is `*mut` in the C struct only).
        h.msg_iov = std::ptr::from_ref(&packets[i])
            .cast_mut()
            .cast::<libc::iovec>();
        h.msg_iovlen = 1;
        h.msg_name = (&raw mut names[i]).cast::<libc::c_void>();
        h.msg_namelen = len;
    }
    let vlen = libc::c_uint::try_from(n).expect("invariant: n <= MMSG_CHUNK");
    // SAFETY: the first `n` headers point to `n` valid iovecs describing caller buffers that
    // are borrowed for the call and to `n` socket addresses on this stack frame with their
    // true lengths; sendmmsg only reads them (and writes `msg_len` into our headers). No
    // control pointer is set.
    let rc = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), vlen, libc::MSG_DONTWAIT) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(rc).expect("invariant: non-negative count"))
}
