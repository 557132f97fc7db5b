//! The one scheduler call no safe crate offers: `sched_setscheduler(2)` with `SCHED_FIFO`
//! (rustix has affinity, not policies). Used by [`crate::sched`].
//!
//! What this file owns: that system call. What it does not: when to call it (the daemon,
//! `daemon.realtime_priority`).

use std::io;

/// Put the calling thread in `SCHED_FIFO` at `priority` (1–99, sched(7)).
pub(crate) fn set_fifo(priority: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: libc::c_int::from(priority),
    };
    // SAFETY: `param` is a valid `sched_param` on our stack for the whole call, which only
    // reads it; pid 0 is the calling thread. Errors come back through the return value,
    // which is checked.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
