//! The only place in braid where `unsafe` code is allowed (declared
//! `#[allow(unsafe_code)] mod sys;` in lib.rs; the crate's lint is `deny`). Each file wraps
//! the system calls that no safe crate (rustix, socket2, quinn-udp, tun-rs) offers, behind a
//! safe function; every `unsafe` block carries a `// SAFETY:` comment naming its invariant.

#[cfg(test)]
pub(crate) mod netns;
pub(crate) mod packet;
pub(crate) mod sched;
pub(crate) mod tunnel;
pub(crate) mod udp;
