//! Real-time scheduling for a data-path worker (`daemon.realtime_priority`).
//!
//! On a host where the applications and bulk traffic keep every core busy, a worker at the
//! normal priority waits for the scheduler after each wake-up, and that wait, not braid's
//! queues, becomes the tail of a latency-critical flow (docs/benchmarks.md, "QoS"). A worker
//! in `SCHED_FIFO` runs as soon as it is woken, ahead of every normal thread. The price: it
//! is not preempted by them either, so with busy polling it spins ahead of them too; the
//! kernel's real-time throttling (`kernel.sched_rt_runtime_us`, 95 % by default) still
//! leaves the rest of the machine 5 %.
//!
//! What this module owns: the safe call. What it does not: the system call itself
//! (`sys/sched.rs`) or when to make it (the daemon).

use std::io;

/// The real-time priorities `SCHED_FIFO` accepts on Linux (sched(7)).
pub const PRIORITIES: core::ops::RangeInclusive<u8> = 1..=99;

/// Put the calling thread in `SCHED_FIFO` at `priority`.
///
/// # Errors
/// `InvalidInput` for a priority outside [`PRIORITIES`]; the kernel's error otherwise, most
/// often `EPERM` without `CAP_SYS_NICE` (or an `RLIMIT_RTPRIO` below `priority`).
pub fn set_realtime_priority(priority: u8) -> io::Result<()> {
    if !PRIORITIES.contains(&priority) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("real-time priority {priority} is outside 1-99"),
        ));
    }
    crate::sys::sched::set_fifo(priority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_outside_1_to_99_are_refused_before_the_kernel_is_asked() {
        for p in [0, 100, 255] {
            let e = set_realtime_priority(p).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{p}");
            assert!(e.to_string().contains("outside 1-99"), "{e}");
        }
    }

    #[test]
    fn a_thread_becomes_sched_fifo_or_the_kernel_says_why() {
        // In a thread of its own: the test harness's threads stay as they are.
        let r = std::thread::spawn(|| {
            set_realtime_priority(1)?;
            // Field 41 of /proc stat is the scheduling policy (proc(5)); 1 is SCHED_FIFO.
            let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
            let after_comm = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let policy: Vec<&str> = after_comm.split_whitespace().collect();
            Ok::<_, io::Error>(policy.get(38).map(|s| (*s).to_owned()))
        })
        .join()
        .expect("the thread does not panic");
        if rustix::process::geteuid().is_root() {
            assert_eq!(
                r.unwrap().as_deref(),
                Some("1"),
                "policy field of /proc stat"
            );
        } else {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        }
    }
}
