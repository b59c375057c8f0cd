//! Thread-per-core workers. Each worker is a single-threaded runtime with
//! its own listener in every pod (the kernel spreads connections over a
//! SO_REUSEPORT group) and its own HBONE connection pool, so a connection's
//! relay, its HTTP/2 connection and its sockets all stay on one thread: no
//! cross-thread wakeups on the data path. Measured here: one connection
//! moved ~20% more through two ztunnels than with a shared work-stealing
//! runtime.

use std::io;
use std::thread::JoinHandle;

use amesh_core::hbone::{HbonePool, PoolConfig};

use crate::busy_poll::BusyPoll;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// What a worker's tasks share.
#[derive(Clone, Debug)]
pub struct Worker {
    pub handle: Handle,
    /// Tunnels opened by this worker's outbound connections.
    pub pool: HbonePool,
}

#[derive(Debug)]
pub struct Workers {
    workers: Vec<Worker>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// `busy_poll`: each worker polls for that long after work before
    /// sleeping (see [`crate::busy_poll`]).
    pub fn start(count: usize, busy_poll: Option<BusyPoll>) -> io::Result<Self> {
        let mut this = Self {
            workers: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for i in 0..count.max(1) {
            let mut builder = Builder::new_current_thread();
            builder.enable_all();
            if let Some(busy_poll) = &busy_poll {
                busy_poll.hook(&mut builder);
            }
            let runtime = builder.build()?;
            let handle = runtime.handle().clone();
            if let Some(busy_poll) = &busy_poll {
                busy_poll.clone().spawn(&handle);
            }
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            // The pool spawns its connection tasks on the runtime that asks
            // for a tunnel: this worker's.
            this.workers.push(Worker {
                handle,
                pool: HbonePool::new(PoolConfig::default()),
            });
            this.stops.push(stop);
            this.threads.push(thread);
        }
        Ok(this)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Worker> {
        self.workers.iter()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
