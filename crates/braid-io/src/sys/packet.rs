//! The system calls of the raw Ethernet transport ([`crate::packet`]) that no safe crate
//! offers: an `AF_PACKET` socket made without a protocol hook, `bind` to a `sockaddr_ll`
//! (device index + EtherType), `getsockname` back into a `sockaddr_ll` (which tells the
//! bound ifindex, -1 once the device is unregistered, and the device's MAC), the
//! `SIOCGIFINDEX`/`SIOCGIFMTU` ioctls, and batched `recvmmsg`/`sendmmsg` (packet(7),
//! recvmmsg(2), sendmmsg(2)).
//!
//! What this file owns: those calls, behind safe functions that take borrowed descriptors and
//! slices. What it does not: frame layout, filtering, queues and counters ([`crate::packet`]).
//!
//! The `mmsghdr`/`sockaddr_ll` arrays live on the stack of each call (at most [`MMSG_CHUNK`]
//! entries): they hold raw pointers into the caller's buffers and must not outlive the call,
//! and keeping them off the transport keeps it `Send` without an `unsafe impl`.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Most messages per `recvmmsg`/`sendmmsg` call (the stack arrays' size).
pub(crate) const MMSG_CHUNK: usize = 64;

/// Linux interface names are at most `IFNAMSIZ − 1` bytes.
const IFNAMSIZ: usize = libc::IFNAMSIZ;

/// `socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)`: protocol 0 installs no
/// receive hook, so the socket sees nothing until [`bind`] names the device and EtherType
/// (packet(7): "If protocol is set to zero, no packets are received"). A socket made with
/// the EtherType right away would receive that EtherType from every device until the bind.
pub(crate) fn socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the return value is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is open, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `ifreq` with `name` (checked: 1 to 15 bytes, no NUL) and a zeroed union.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `ifreq` is a plain C struct (a name array and a union of integers, addresses
    // and pointers) for which all-zero bytes are a valid value (null pointers, zero ints).
    let mut req: libc::ifreq = unsafe { zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// The result of an `ioctl` that returns 0 or -1 with `errno`.
fn check_ioctl(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The index of device `name` in the socket's network namespace (`SIOCGIFINDEX`; `ENODEV`
/// if there is none).
pub(crate) fn ifindex(fd: BorrowedFd<'_>, name: &str) -> io::Result<i32> {
    let mut req = ifreq(name)?;
    // SAFETY: `fd` is live for the borrow; `req` is a valid, exclusively borrowed `ifreq` that
    // outlives the call: SIOCGIFINDEX reads its name and writes `ifru_ifindex`.
    check_ioctl(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFINDEX, &raw mut req) })?;
    // SAFETY: SIOCGIFINDEX succeeded, so the kernel wrote the `ifru_ifindex` member.
    Ok(unsafe { req.ifr_ifru.ifru_ifindex })
}

/// The MTU of device `name` (`SIOCGIFMTU`).
pub(crate) fn mtu(fd: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
    let mut req = ifreq(name)?;
    // SAFETY: as in `ifindex`: SIOCGIFMTU reads the name and writes `ifru_mtu` of `req`.
    check_ioctl(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &raw mut req) })?;
    // SAFETY: SIOCGIFMTU succeeded, so the kernel wrote the `ifru_mtu` member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `size_of::<sockaddr_ll>()` as a `socklen_t`.
fn sockaddr_ll_len() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>())
        .expect("invariant: sockaddr_ll fits socklen_t")
}

/// Bind the socket to device `ifindex` and EtherType `ethertype` (host order): from now on
/// it receives exactly the frames of that EtherType that arrive on that device.
pub(crate) fn bind(fd: BorrowedFd<'_>, ifindex: i32, ethertype: u16) -> io::Result<()> {
    // SAFETY: `sockaddr_ll` is plain integers and a byte array; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = ethertype.to_be();
    addr.sll_ifindex = ifindex;
    // SAFETY: `addr` is a valid `sockaddr_ll` on our stack for the whole call, and the length
    // passed is its size; the kernel only reads it.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            sockaddr_ll_len(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// What `getsockname` says about a bound packet socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bound {
    /// The bound device's index; -1 once the device was unregistered (packet(7) resets it).
    pub(crate) ifindex: i32,
    /// The device's hardware address (zero if it is gone or not 6 bytes long).
    pub(crate) mac: [u8; 6],
}

/// Read back the binding: the device index (-1 when the device is gone) and its MAC.
pub(crate) fn bound(fd: BorrowedFd<'_>) -> io::Result<Bound> {
    // SAFETY: all-zero is a valid `sockaddr_ll` (integers and a byte array).
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    let mut len = sockaddr_ll_len();
    // SAFETY: `addr` and `len` are valid and exclusively borrowed for the call; `len` tells
    // the kernel how many bytes of `addr` it may write.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&raw mut addr).cast::<libc::sockaddr>(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut mac = [0u8; 6];
    if addr.sll_halen == 6 {
        mac.copy_from_slice(&addr.sll_addr[..6]);
    }
    Ok(Bound {
        ifindex: addr.sll_ifindex,
        mac,
    })
}

/// One received frame, as `recvmmsg` reported it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RecvMeta {
    /// Length of the frame on the wire (`MSG_TRUNC`: may exceed the buffer).
    pub(crate) len: usize,
    /// The kernel cut the frame to fit the buffer.
    pub(crate) truncated: bool,
    /// `sll_pkttype`: `PACKET_HOST` (0) for frames addressed to this device's MAC.
    pub(crate) pkttype: u8,
}

/// `PACKET_HOST`: a frame addressed to the receiving device (packet(7)).
pub(crate) const PACKET_HOST: u8 = libc::PACKET_HOST;

/// Receive up to `bufs.len()` (at most [`MMSG_CHUNK`]) frames, one per buffer, without
/// blocking. Returns how many arrived ("would block" is an error of kind `WouldBlock`);
/// `metas[i]` describes `bufs[i]`.
pub(crate) fn recv_frames(
    fd: BorrowedFd<'_>,
    bufs: &mut [IoSliceMut<'_>],
    metas: &mut [RecvMeta],
) -> io::Result<usize> {
    let n = bufs.len().min(metas.len()).min(MMSG_CHUNK);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths) and `sockaddr_ll`.
    let mut hdrs: [libc::mmsghdr; MMSG_CHUNK] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut names: [libc::sockaddr_ll; MMSG_CHUNK] = unsafe { zeroed() };
    for i in 0..n {
        let h = &mut hdrs[i].msg_hdr;
        // `IoSliceMut` is ABI-compatible with `iovec` on Unix (std's documented guarantee).
        h.msg_iov = std::ptr::from_mut(&mut bufs[i]).cast::<libc::iovec>();
        h.msg_iovlen = 1;
        h.msg_name = (&raw mut names[i]).cast::<libc::c_void>();
        h.msg_namelen = sockaddr_ll_len();
    }
    let vlen = libc::c_uint::try_from(n).expect("invariant: n <= MMSG_CHUNK");
    // SAFETY: the first `n` headers point to `n` valid iovecs (each an exclusively borrowed
    // caller buffer, alive for the call) and to `n` `sockaddr_ll`s on this stack frame with
    // their true size; the kernel writes at most `iov_len` bytes into each buffer and
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
    let got = usize::try_from(rc).expect("invariant: non-negative count");
    for i in 0..got.min(n) {
        let flags = hdrs[i].msg_hdr.msg_flags;
        metas[i] = RecvMeta {
            len: hdrs[i].msg_len as usize,
            truncated: flags & libc::MSG_TRUNC != 0,
            pkttype: names[i].sll_pkttype,
        };
    }
    Ok(got.min(n))
}

/// Send up to `frames.len()` (at most [`MMSG_CHUNK`]) whole Ethernet frames through the bound
/// socket (device and EtherType of the binding), without blocking. Returns how many the
/// kernel took; an error means the FIRST frame failed (sendmmsg(2): an error after a partial
/// send is not reported; the next call meets it on its first frame).
pub(crate) fn send_frames(fd: BorrowedFd<'_>, frames: &[IoSlice<'_>]) -> io::Result<usize> {
    let n = frames.len().min(MMSG_CHUNK);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
    let mut hdrs: [libc::mmsghdr; MMSG_CHUNK] = unsafe { zeroed() };
    for (h, frame) in hdrs.iter_mut().zip(frames.iter().take(n)) {
        // `IoSlice` is ABI-compatible with `iovec` on Unix (std's documented guarantee); the
        // kernel only reads through it (the pointer is `*mut` in the C struct only).
        h.msg_hdr.msg_iov = std::ptr::from_ref(frame).cast_mut().cast::<libc::iovec>();
        h.msg_hdr.msg_iovlen = 1;
        // No msg_name: the frame goes out on the bound device with the bound EtherType.
    }
    let vlen = libc::c_uint::try_from(n).expect("invariant: n <= MMSG_CHUNK");
    // SAFETY: the first `n` headers point to `n` valid iovecs describing caller buffers that
    // are borrowed for the call; sendmmsg only reads them (and writes `msg_len` into our
    // headers). No name or control pointers are set.
    let rc = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), vlen, libc::MSG_DONTWAIT) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(rc).expect("invariant: non-negative count"))
}
