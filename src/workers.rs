//! The threads that serve connections: one single-threaded runtime per worker, each with its
//! own event loop, and every connection spends its whole life (TLS, upgrade, ticket, relay)
//! on the one it was given at accept time.
//!
//! Why not one multi-threaded runtime: there, a worker with nothing to do waits on the shared
//! event loop, so every readiness change of a busy session's sockets wakes it (a cross-CPU
//! wakeup, expensive in a VM) and the session's task hops between threads. Measured on the
//! benchmark's 2-vCPU VM: 12,000 context switches a second in one wss:// transfer, against
//! 60 to 840 with the session kept on one worker.

use std::io;
use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Handle};

/// The running workers. They run until the process exits.
pub struct Workers {
    handles: Vec<Handle>,
}

impl Workers {
    /// Starts `count` workers, or one per CPU this process may use (its affinity mask and
    /// cgroup quota) when `None`.
    ///
    /// # Errors
    /// A thread or its runtime could not be created.
    pub fn start(count: Option<usize>) -> io::Result<Workers> {
        let count = count
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
            .max(1);
        let mut handles = Vec::with_capacity(count);
        for _ in 0..count {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            // Named: `top -H` and profilers tell the proxy's workers from anything else.
            std::thread::Builder::new()
                .name("consolegate-io".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
        }
        Ok(Workers { handles })
    }

    /// The worker with the fewest live tasks: where the next connection goes.
    pub fn least_busy(&self) -> &Handle {
        self.handles
            .iter()
            .min_by_key(|h| h.metrics().num_alive_tasks())
            .expect("at least one worker")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_spread_over_the_workers() {
        let workers = Workers::start(Some(2)).unwrap();
        assert_eq!(workers.handles.len(), 2);
        let (hold, held) = tokio::sync::oneshot::channel::<()>();
        let first = workers.least_busy().clone();
        first.spawn(async move {
            let _ = held.await;
        });
        // The busy one is passed over until the other has as many tasks.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while first.metrics().num_alive_tasks() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let second = workers.least_busy();
        assert_ne!(
            second.metrics().num_alive_tasks(),
            first.metrics().num_alive_tasks()
        );
        drop(hold);
    }

    #[test]
    fn auto_starts_at_least_one() {
        let workers = Workers::start(None).unwrap();
        assert!(!workers.handles.is_empty());
    }
}
