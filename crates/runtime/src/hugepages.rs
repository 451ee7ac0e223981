//! Compiles run with transparent huge pages off.
//!
//! A compile allocates and frees a few hundred MB (an 18 MB Python
//! component's compile peaks at 450–590 MB). The allocator (mimalloc) asks the
//! kernel for huge pages on its arenas, so each fresh 2 MiB of that heap is
//! one huge-page fault that zeroes all 2 MiB at once, from physical memory
//! the kernel must find contiguous: on these machines (a VM, where memory
//! the guest has not touched yet is also faulted in by the host), zeroing
//! pages took 40–50% of a cold install's CPU, and installs of the same
//! component ranged from 0.9 to 2.1 s. With huge pages off while it runs,
//! the slowest of 10 installs took 1.09 s against 1.32 s, and the
//! slowest JavaScript one 1.26 s against 1.63 s; the medians did not move
//! (bench/README.md, "Compiles run on small pages").
//!
//! Why not off for good: the flag is per process, and serving is what huge
//! pages are for (an earlier measurement with them off for the whole
//! process cost hello 7–10% of its requests/s). So [`small_pages`] turns
//! them off while at least one compile runs and back on after the last one,
//! and only if it was this module that turned them off: a process started
//! with them off (the flag is inherited, or `MIMALLOC_ALLOW_THP=0`) keeps
//! them off. Memory already mapped with huge pages keeps them; only the
//! faults in between take small pages, whichever thread takes them.

use std::sync::Mutex;

/// How many compiles hold a [`SmallPages`], and whether the first of them
/// turned huge pages off (so the last one turns them back on).
struct Holders {
    count: usize,
    turned_off: bool,
}

static HOLDERS: Mutex<Holders> = Mutex::new(Holders {
    count: 0,
    turned_off: false,
});

/// While alive, new memory of this process is mapped with small pages
/// (Linux; nothing elsewhere). Hold one for the length of a compile.
#[must_use = "huge pages are back on as soon as this is dropped"]
pub(crate) struct SmallPages(());

/// Turns transparent huge pages off for the process until the last
/// [`SmallPages`] alive is dropped.
pub(crate) fn small_pages() -> SmallPages {
    let mut holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
    if holders.count == 0 {
        holders.turned_off = !os::disabled() && os::set_disabled(true);
    }
    holders.count += 1;
    SmallPages(())
}

impl Drop for SmallPages {
    fn drop(&mut self) {
        let mut holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        holders.count -= 1;
        if holders.count == 0 && std::mem::take(&mut holders.turned_off) {
            os::set_disabled(false);
        }
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // two prctl calls with integer arguments; rustix's wrapper is not built here
mod os {
    /// Whether transparent huge pages are off for this process.
    pub(super) fn disabled() -> bool {
        // SAFETY: PR_GET_THP_DISABLE reads a flag of the calling process
        // and takes no pointers.
        unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) > 0 }
    }

    /// Turns them off (`true`) or on; `false` when the kernel refused.
    pub(super) fn set_disabled(off: bool) -> bool {
        // SAFETY: PR_SET_THP_DISABLE sets a flag of the calling process
        // and takes no pointers.
        let done = unsafe {
            libc::prctl(
                libc::PR_SET_THP_DISABLE,
                libc::c_ulong::from(off),
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        } == 0;
        if !done {
            tracing::debug!(
                off,
                error = %std::io::Error::last_os_error(),
                "cannot switch transparent huge pages"
            );
        }
        done
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    pub(super) fn disabled() -> bool {
        true
    }

    pub(super) fn set_disabled(_off: bool) -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The checks run in a child process of this test binary, running only
    /// this test: the flag is per process, and other tests compile.
    #[test]
    fn huge_pages_are_off_while_compiles_run_and_restored_after() {
        if std::env::var_os("BERTH_THP_CHILD").is_none() {
            let child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "hugepages::tests::huge_pages_are_off_while_compiles_run_and_restored_after",
                ])
                .env("BERTH_THP_CHILD", "1")
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&child.stdout);
            assert!(
                child.status.success() && out.contains("1 passed"),
                "the child's checks failed or did not run:\n{out}{}",
                String::from_utf8_lossy(&child.stderr)
            );
            return;
        }
        assert!(os::set_disabled(false));
        assert!(!os::disabled());
        let outer = small_pages();
        assert!(os::disabled(), "huge pages are off while a compile runs");
        let inner = small_pages();
        drop(outer);
        assert!(os::disabled(), "still off while another compile runs");
        drop(inner);
        assert!(!os::disabled(), "back on after the last compile");

        // A process that had them off keeps them off.
        assert!(os::set_disabled(true));
        drop(small_pages());
        assert!(os::disabled(), "a compile does not turn huge pages on");
    }
}
