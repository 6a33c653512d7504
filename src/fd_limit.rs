//! The process's file-descriptor limit. Every channel, exit stream and outbound connection
//! holds a descriptor, and the usual soft limit (1024) is far below what a busy relay
//! needs, while the hard limit is usually much higher: a node raises its soft limit to
//! the hard one at start, and a relay sizes its channel limit from the result.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Raises the soft RLIMIT_NOFILE to the hard limit. Returns the soft limit in force
/// afterwards (`None`: unlimited or unknown).
pub fn raise_to_hard_limit() -> Option<u64> {
    let now = getrlimit(Resource::Nofile);
    if now.current != now.maximum {
        let raised = Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!("cannot raise the file-descriptor limit to the hard limit: {e}");
        }
    }
    soft_limit()
}

/// The soft RLIMIT_NOFILE in force (`None`: unlimited).
pub fn soft_limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

/// Whether an accept (or connect) failed for want of descriptors, in this process
/// (EMFILE) or the whole system (ENFILE).
pub fn is_exhaustion(e: &std::io::Error) -> bool {
    let errno = rustix::io::Errno::from_io_error(e);
    errno == Some(rustix::io::Errno::MFILE) || errno == Some(rustix::io::Errno::NFILE)
}
