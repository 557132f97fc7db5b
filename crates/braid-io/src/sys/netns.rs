//! Test-only: named network namespaces for root tests (`/run/netns/NAME`, the layout of
//! `ip netns`), made without forking: a short-lived thread `unshare(CLONE_NEWNET)`s and
//! bind-mounts its `/proc/thread-self/ns/net` onto the name; [`NetNs::run`] runs a closure on
//! a thread that `setns`es into it. Dropping the [`NetNs`] unmounts and removes the name, so
//! the namespace dies with the last socket or device in it.
//!
//! What this file owns: [`NetNs`]. What it does not: anything in the namespace (the tests
//! create their devices and sockets themselves and close them before the drop).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::mount::{UnmountFlags, mount_bind, unmount};
use rustix::thread::{LinkNameSpaceType, UnshareFlags, move_into_link_name_space};

const NETNS_DIR: &str = "/run/netns";

/// A named network namespace, removed on drop.
#[derive(Debug)]
pub(crate) struct NetNs {
    path: PathBuf,
}

impl NetNs {
    /// Creates `/run/netns/<name>` holding a fresh network namespace (only `lo`, down).
    pub(crate) fn create(name: &str) -> io::Result<Self> {
        std::fs::create_dir_all(NETNS_DIR)?;
        let path = Path::new(NETNS_DIR).join(name);
        // A leftover of a crashed run with the same pid: take it down first.
        if path.exists() {
            let _ = unmount(&path, UnmountFlags::DETACH);
            std::fs::remove_file(&path)?;
        }
        File::options().write(true).create_new(true).open(&path)?;
        // From here on, the drop guard removes the name even if the mount fails.
        let ns = Self { path };
        let target = ns.path.clone();
        std::thread::spawn(move || -> io::Result<()> {
            // SAFETY: only CLONE_NEWNET is unshared: this thread gets a new network namespace
            // and keeps sharing the file descriptor table (no CLONE_FILES), so no thread can
            // observe descriptors from an unshared table, which is unshare_unsafe's contract.
            // The thread ends right after the bind mount; nothing else runs on it.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
            mount_bind("/proc/thread-self/ns/net", &target)?;
            Ok(())
        })
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))??;
        Ok(ns)
    }

    /// Runs `f` on a new thread inside the namespace and returns its result (a panic in `f`
    /// is resumed on the caller).
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let joined = std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&self.path).expect("open the namespace");
                move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
                    .expect("setns into the namespace");
                f()
            })
            .join()
        });
        joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = unmount(&self.path, UnmountFlags::DETACH);
        let _ = std::fs::remove_file(&self.path);
    }
}
