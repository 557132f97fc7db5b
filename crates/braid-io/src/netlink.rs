//! Link configuration over rtnetlink (RFC 3549): look up an interface, set its MTU and
//! up/down state, add and list its addresses. Used to configure the vNIC ([`crate::vnic`]);
//! braid never shells out to `ip`.
//!
//! What this module owns: synchronous wrappers around [`rtnetlink`] and [`NetlinkError`]. What
//! it does not: creating devices (the TUN/TAP device is made by [`crate::vnic`], veth pairs and
//! namespaces by the testbed), routes, and anything on the data path.
//!
//! # Why a private runtime per call
//!
//! rtnetlink is async (a tokio `Connection` task drives the socket). Callers here are setup
//! code that is synchronous, so every call builds a current-thread tokio runtime, opens one
//! `NETLINK_ROUTE` socket, runs the request and drops both: tens of microseconds, paid only at
//! setup. A useful consequence: the socket is opened *on the calling thread*, so the call acts
//! on the network namespace that thread is in (a thread that did `setns` configures its
//! namespace). Calling from inside a tokio runtime is refused ([`NetlinkError::InsideRuntime`])
//! instead of panicking; async callers use `spawn_blocking`.

use std::future::Future;
use std::io;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};

/// Longest interface name Linux accepts (`IFNAMSIZ` − 1 for the NUL).
pub const IFNAME_MAX_BYTES: usize = 15;

/// Why a netlink operation failed. Every variant names the interface and, where the kernel
/// said why, carries a hint on what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// Called from a thread that is running a tokio runtime.
    #[error(
        "netlink call on {ifname} from inside a tokio runtime: call it from a plain thread or \
         tokio::task::spawn_blocking"
    )]
    InsideRuntime {
        /// The interface the call was about.
        ifname: String,
    },
    /// The interface name is empty, too long or contains a NUL or `/`.
    #[error(
        "interface name {ifname:?} is invalid: use 1..={IFNAME_MAX_BYTES} bytes without '/', \
         whitespace or NUL"
    )]
    BadName {
        /// The name given.
        ifname: String,
    },
    /// The prefix length does not fit the address family.
    #[error(
        "prefix length /{prefix_len} is too long for {addr} on {ifname}: use at most 32 for \
         IPv4 and 128 for IPv6"
    )]
    BadPrefix {
        /// The interface.
        ifname: String,
        /// The address.
        addr: IpAddr,
        /// The prefix length given.
        prefix_len: u8,
    },
    /// The tokio runtime or the netlink socket could not be created.
    #[error("open a netlink socket to configure {ifname}: {hint}")]
    Connect {
        /// The interface.
        ifname: String,
        /// What to check.
        hint: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No interface of that name exists in the calling thread's network namespace.
    #[error(
        "interface {ifname} does not exist in this network namespace: create it first, check \
         the name, or run in the namespace that holds it"
    )]
    NoSuchLink {
        /// The interface.
        ifname: String,
    },
    /// Looking the interface up failed.
    #[error("look up interface {ifname}: {hint}")]
    GetLink {
        /// The interface.
        ifname: String,
        /// What to check.
        hint: &'static str,
        /// The netlink error (boxed: it carries the whole netlink message).
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Setting the MTU failed.
    #[error("set the MTU of {ifname} to {mtu}: {hint}")]
    SetMtu {
        /// The interface.
        ifname: String,
        /// The MTU asked for.
        mtu: u32,
        /// What to check.
        hint: &'static str,
        /// The netlink error (boxed: it carries the whole netlink message).
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Setting the link up or down failed.
    #[error("set {ifname} {state}: {hint}")]
    SetState {
        /// The interface.
        ifname: String,
        /// `"up"` or `"down"`.
        state: &'static str,
        /// What to check.
        hint: &'static str,
        /// The netlink error (boxed: it carries the whole netlink message).
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Setting `gso_max_segs` failed.
    #[error("set gso_max_segs of {ifname} to {segs}: {hint}")]
    SetGsoMaxSegs {
        /// The interface.
        ifname: String,
        /// The cap asked for.
        segs: u32,
        /// What to check.
        hint: &'static str,
        /// The netlink error (boxed: it carries the whole netlink message).
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Adding an address failed (an address that is already there is not an error).
    #[error("add address {addr}/{prefix_len} to {ifname}: {hint}")]
    AddAddress {
        /// The interface.
        ifname: String,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix_len: u8,
        /// What to check.
        hint: &'static str,
        /// The netlink error (boxed: it carries the whole netlink message).
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Listing addresses failed.
    #[error("list the addresses of {ifname}: {hint}")]
    GetAddresses {
        /// The interface.
        ifname: String,
        /// What to check.
        hint: &'static str,
        /// The netlink error (boxed: it carries the whole netlink message).
        #[source]
        source: Box<rtnetlink::Error>,
    },
}

/// Sets the MTU of `ifname` (if `mtu` is `Some`), then brings it up or down. The MTU goes
/// first so a link never comes up with the old MTU.
///
/// # Errors
/// [`NetlinkError::NoSuchLink`] if there is no such interface, [`NetlinkError::SetMtu`] if
/// the kernel refuses the MTU (out of the device's range), [`NetlinkError::SetState`] if it
/// refuses the state change, or a connection error.
pub fn set_link(ifname: &str, mtu: Option<u32>, up: bool) -> Result<(), NetlinkError> {
    run(ifname, async |handle| {
        let index = require_index(&handle, ifname).await?;
        if let Some(mtu) = mtu {
            let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
            handle
                .link()
                .set(msg)
                .execute()
                .await
                .map_err(|source| NetlinkError::SetMtu {
                    ifname: ifname.to_owned(),
                    mtu,
                    hint: hint(
                        &source,
                        "the MTU is outside the device's range (see `max_mtu`)",
                    ),
                    source: Box::new(source),
                })?;
        }
        let builder = LinkUnspec::new_with_index(index);
        let msg = if up { builder.up() } else { builder.down() }.build();
        handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|source| NetlinkError::SetState {
                ifname: ifname.to_owned(),
                state: if up { "up" } else { "down" },
                hint: hint(&source, "the kernel refused the state change"),
                source: Box::new(source),
            })
    })
}

/// Adds `addr/prefix_len` to `ifname`. Idempotent: an address that is already there (the
/// kernel answers `EEXIST`) is success. IPv6 addresses are added with `IFA_F_NODAD`: the
/// vNIC is braid's own link, there is no other host on it to collide with, and skipping
/// duplicate address detection makes the address usable at once instead of after ~1 s.
///
/// # Errors
/// [`NetlinkError::BadPrefix`], [`NetlinkError::NoSuchLink`], [`NetlinkError::AddAddress`] or
/// a connection error.
pub fn add_address(ifname: &str, addr: IpAddr, prefix_len: u8) -> Result<(), NetlinkError> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(NetlinkError::BadPrefix {
            ifname: ifname.to_owned(),
            addr,
            prefix_len,
        });
    }
    run(ifname, async |handle| {
        let index = require_index(&handle, ifname).await?;
        let mut req = handle.address().add(index, addr, prefix_len);
        if addr.is_ipv6() {
            let msg = req.message_mut();
            msg.header.flags |= AddressHeaderFlags::Nodad;
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc_errno::EEXIST) => Ok(()),
            Err(source) => Err(NetlinkError::AddAddress {
                ifname: ifname.to_owned(),
                addr,
                prefix_len,
                hint: hint(&source, "the kernel refused the address"),
                source: Box::new(source),
            }),
        }
    })
}

/// The addresses of `ifname` with their prefix lengths, in the kernel's order (IPv6
/// link-local addresses included).
///
/// # Errors
/// [`NetlinkError::NoSuchLink`], [`NetlinkError::GetAddresses`] or a connection error.
pub fn addresses(ifname: &str) -> Result<Vec<(IpAddr, u8)>, NetlinkError> {
    run(ifname, async |handle| {
        let index = require_index(&handle, ifname).await?;
        let map_err = |source: rtnetlink::Error| NetlinkError::GetAddresses {
            ifname: ifname.to_owned(),
            hint: hint(&source, "the kernel refused the dump"),
            source: Box::new(source),
        };
        let mut stream = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = stream.try_next().await.map_err(map_err)? {
            if msg.header.index != index {
                continue;
            }
            if let Some(ip) = local_address(&msg) {
                out.push((ip, msg.header.prefix_len));
            }
        }
        Ok(out)
    })
}

/// The interface index of `ifname`, `None` if no interface of that name exists in the calling
/// thread's network namespace.
///
/// # Errors
/// [`NetlinkError::GetLink`] or a connection error.
pub fn link_index(ifname: &str) -> Result<Option<u32>, NetlinkError> {
    run(ifname, async |handle| {
        Ok(get_link(&handle, ifname).await?.map(|m| m.header.index))
    })
}

/// The MTU of `ifname`.
///
/// # Errors
/// [`NetlinkError::NoSuchLink`], [`NetlinkError::GetLink`] or a connection error.
pub fn link_mtu(ifname: &str) -> Result<u32, NetlinkError> {
    run(ifname, async |handle| {
        let msg = get_link(&handle, ifname)
            .await?
            .ok_or_else(|| NetlinkError::NoSuchLink {
                ifname: ifname.to_owned(),
            })?;
        Ok(msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(mtu) => Some(*mtu),
                _ => None,
            })
            .unwrap_or(0))
    })
}

/// `true` if `ifname` is administratively up (`IFF_UP`).
///
/// # Errors
/// [`NetlinkError::NoSuchLink`], [`NetlinkError::GetLink`] or a connection error.
pub fn link_is_up(ifname: &str) -> Result<bool, NetlinkError> {
    run(ifname, async |handle| {
        let msg = get_link(&handle, ifname)
            .await?
            .ok_or_else(|| NetlinkError::NoSuchLink {
                ifname: ifname.to_owned(),
            })?;
        Ok(msg.header.flags.contains(LinkFlags::Up))
    })
}

/// Caps the number of segments of one GSO super-packet the kernel hands `ifname`
/// (`IFLA_GSO_MAX_SEGS`, like `ip link set dev IF gso_max_segs N`): larger ones it segments
/// in software before the device. The vNIC sets it to its receive batch so a super-packet
/// always fits one batch.
///
/// # Errors
/// [`NetlinkError::NoSuchLink`], [`NetlinkError::SetGsoMaxSegs`] (kernels before 5.19 refuse
/// changing it) or a connection error.
pub fn set_gso_max_segs(ifname: &str, segs: u32) -> Result<(), NetlinkError> {
    run(ifname, async |handle| {
        let index = require_index(&handle, ifname).await?;
        let msg = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::GsoMaxSegs(segs))
            .build();
        handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|source| NetlinkError::SetGsoMaxSegs {
                ifname: ifname.to_owned(),
                segs,
                hint: hint(&source, "this kernel does not let gso_max_segs be changed"),
                source: Box::new(source),
            })
    })
}

/// The `gso_max_segs` of `ifname` (see [`set_gso_max_segs`]); `None` if the kernel does not
/// report it.
///
/// # Errors
/// [`NetlinkError::NoSuchLink`], [`NetlinkError::GetLink`] or a connection error.
pub fn link_gso_max_segs(ifname: &str) -> Result<Option<u32>, NetlinkError> {
    run(ifname, async |handle| {
        let msg = get_link(&handle, ifname)
            .await?
            .ok_or_else(|| NetlinkError::NoSuchLink {
                ifname: ifname.to_owned(),
            })?;
        Ok(msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::GsoMaxSegs(n) => Some(*n),
            _ => None,
        }))
    })
}

/// Checks an interface name: 1..=15 bytes, no `/`, whitespace or NUL (the kernel's
/// `dev_valid_name`, minus its "." and ".." special cases which it also refuses).
///
/// # Errors
/// [`NetlinkError::BadName`].
pub fn check_ifname(ifname: &str) -> Result<(), NetlinkError> {
    let ok = !ifname.is_empty()
        && ifname.len() <= IFNAME_MAX_BYTES
        && ifname != "."
        && ifname != ".."
        && !ifname
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace() || b == b':');
    if ok {
        Ok(())
    } else {
        Err(NetlinkError::BadName {
            ifname: ifname.to_owned(),
        })
    }
}

/// Runs `op` with a fresh netlink handle on a private current-thread runtime.
fn run<T, F>(ifname: &str, op: impl FnOnce(Handle) -> F) -> Result<T, NetlinkError>
where
    F: Future<Output = Result<T, NetlinkError>>,
{
    check_ifname(ifname)?;
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(NetlinkError::InsideRuntime {
            ifname: ifname.to_owned(),
        });
    }
    let connect_err = |source: io::Error| NetlinkError::Connect {
        ifname: ifname.to_owned(),
        hint: "is NETLINK_ROUTE available (not blocked by seccomp) and are file descriptors left?",
        source,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(connect_err)?;
    rt.block_on(async {
        let (conn, handle, _messages) = rtnetlink::new_connection().map_err(connect_err)?;
        let driver = tokio::spawn(conn);
        let out = op(handle).await;
        driver.abort();
        out
    })
}

/// The link message of `ifname`, `None` if it does not exist.
async fn get_link(handle: &Handle, ifname: &str) -> Result<Option<LinkMessage>, NetlinkError> {
    let mut stream = handle.link().get().match_name(ifname.to_owned()).execute();
    match stream.try_next().await {
        Ok(msg) => Ok(msg),
        Err(e) if errno(&e) == Some(libc_errno::ENODEV) => Ok(None),
        Err(source) => Err(NetlinkError::GetLink {
            ifname: ifname.to_owned(),
            hint: hint(&source, "the kernel refused the lookup"),
            source: Box::new(source),
        }),
    }
}

async fn require_index(handle: &Handle, ifname: &str) -> Result<u32, NetlinkError> {
    get_link(handle, ifname)
        .await?
        .map(|m| m.header.index)
        .ok_or_else(|| NetlinkError::NoSuchLink {
            ifname: ifname.to_owned(),
        })
}

/// The interface's own address of an address message: `IFA_LOCAL` (on point-to-point links
/// such as TUN, `IFA_ADDRESS` is the peer's), else `IFA_ADDRESS`.
fn local_address(msg: &AddressMessage) -> Option<IpAddr> {
    let find = |want_local: bool| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if want_local => Some(*ip),
            AddressAttribute::Address(ip) if !want_local => Some(*ip),
            _ => None,
        })
    };
    find(true).or_else(|| find(false))
}

/// The positive errno of a netlink error, if the kernel sent one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// What to fix, from the errno; `default` for errors without a specific hint.
fn hint(e: &rtnetlink::Error, default: &'static str) -> &'static str {
    match errno(e) {
        Some(libc_errno::EPERM | libc_errno::EACCES) => {
            "permission denied: needs CAP_NET_ADMIN in this network namespace (run as root)"
        }
        Some(libc_errno::ENODEV) => "the interface disappeared (was its owner closed?)",
        Some(libc_errno::EADDRNOTAVAIL) => "the address is not valid for this interface",
        Some(libc_errno::EOPNOTSUPP) => "the device does not support this operation",
        Some(libc_errno::EBUSY) => "the device is busy; retry",
        _ => default,
    }
}

/// The few errno values this module tests for (Linux, all architectures braid runs on).
mod libc_errno {
    pub(super) const EPERM: i32 = 1;
    pub(super) const EACCES: i32 = 13;
    pub(super) const EBUSY: i32 = 16;
    pub(super) const EEXIST: i32 = 17;
    pub(super) const ENODEV: i32 = 19;
    pub(super) const EOPNOTSUPP: i32 = 95;
    pub(super) const EADDRNOTAVAIL: i32 = 99;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_syscall() {
        for bad in [
            "",
            "a/b",
            "sixteen-bytes-xx",
            "with space",
            ".",
            "..",
            "a:b",
        ] {
            assert!(
                matches!(check_ifname(bad), Err(NetlinkError::BadName { .. })),
                "{bad:?} accepted"
            );
            assert!(matches!(link_index(bad), Err(NetlinkError::BadName { .. })));
        }
        assert!(check_ifname("braid-t1234567").is_ok());
        assert!(check_ifname("fifteen-bytes-x").is_ok());
    }

    #[test]
    fn prefix_too_long_is_refused_with_the_interface_named() {
        let err = add_address("braid-nope", "10.0.0.1".parse().unwrap(), 33).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("braid-nope") && text.contains("/33"),
            "{text}"
        );
        assert!(add_address("braid-nope", "fd00::1".parse().unwrap(), 129).is_err());
    }

    #[test]
    fn missing_link_is_none_and_named_in_errors() {
        // Reading links needs no privilege.
        assert_eq!(link_index("braid-absent0").unwrap(), None);
        let err = link_mtu("braid-absent0").unwrap_err();
        assert!(matches!(err, NetlinkError::NoSuchLink { .. }));
        assert!(err.to_string().contains("braid-absent0"));
        assert!(matches!(
            link_is_up("braid-absent0"),
            Err(NetlinkError::NoSuchLink { .. })
        ));
    }

    #[test]
    fn loopback_reads_back() {
        let index = link_index("lo").unwrap().expect("lo exists");
        assert!(index >= 1);
        assert!(link_mtu("lo").unwrap() >= 1280);
        let _ = link_is_up("lo").unwrap();
    }

    #[test]
    fn refused_inside_a_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = rt.block_on(async { link_index("lo") }).unwrap_err();
        assert!(matches!(err, NetlinkError::InsideRuntime { .. }), "{err}");
    }
}
