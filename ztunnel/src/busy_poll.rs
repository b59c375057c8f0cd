//! Opt-in busy polling for worker threads (`--busy-poll-us`), off by default.
//!
//! Why: on a VM whose idle vCPUs halt, waking a sleeping thread costs the
//! waker a VM exit for the IPI and the wakee a halt exit. A request through
//! the mesh crosses two ztunnels, so it pays four such wakeups more than the
//! same request without the mesh. Measured on the 2-vCPU dev VM (see README,
//! "Busy polling"): that is most of the latency ztunnel adds. A worker that
//! is still polling when the next event arrives needs no wakeup at all.
//!
//! How: after the worker wakes from a real park, a spinner task keeps the
//! runtime polling its driver (epoll with zero timeout) until `window` has
//! passed since a relay on this worker last moved (was polled), then lets
//! the worker park again. Each round also calls `sched_yield`, so any other
//! runnable thread on this CPU (an app) runs first: the spin only fills
//! time the CPU would have spent idle. A worker with no traffic never
//! wakes, so it never spins; a timer wakeup costs one window.
//!
//! The cost is CPU: while traffic flows, a polling worker shows as busy.
//! That is why it is off unless asked for, like Linux's `busy_poll`.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;
use tokio::runtime::{Builder, Handle};
use tokio::sync::Notify;

thread_local! {
    /// Polls of [`Tracked`] futures on this thread: the spinner's sign that
    /// traffic is still flowing.
    static ACTIVITY: Cell<u64> = const { Cell::new(0) };
}

fn activity() -> u64 {
    ACTIVITY.with(Cell::get)
}

pin_project! {
    /// A future whose every poll counts as activity on its worker.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        ACTIVITY.with(|a| a.set(a.get().wrapping_add(1)));
        self.project().inner.poll(cx)
    }
}

/// Marks `future`'s polls (a relay's: each means bytes may have moved) as
/// activity that keeps a busy-polling worker polling.
pub fn tracked<F: Future>(future: F) -> Tracked<F> {
    Tracked { inner: future }
}

#[derive(Clone, Debug)]
pub struct BusyPoll {
    window: Duration,
    unparked: Arc<Notify>,
}

impl BusyPoll {
    /// `None` when `window` is zero (off).
    pub fn new(window: Duration) -> Option<Self> {
        (!window.is_zero()).then(|| Self {
            window,
            unparked: Arc::new(Notify::new()),
        })
    }

    /// Hooks the worker runtime's unpark so each real wakeup starts a spin.
    pub fn hook(&self, builder: &mut Builder) {
        let unparked = self.unparked.clone();
        builder.on_thread_unpark(move || unparked.notify_one());
    }

    /// Starts the spinner on the worker runtime `handle` (which must have
    /// been built with [`BusyPoll::hook`]).
    pub fn spawn(self, handle: &Handle) {
        handle.spawn(async move {
            loop {
                self.unparked.notified().await;
                self.spin().await;
            }
        });
    }

    async fn spin(&self) {
        let mut seen = activity();
        let mut deadline = Instant::now() + self.window;
        while Instant::now() < deadline {
            // Deferred behind I/O: the runtime polls its driver without
            // blocking and runs whatever became ready before coming back.
            tokio::task::yield_now().await;
            let _ = nix::sched::sched_yield();
            let now = activity();
            if now != seen {
                seen = now;
                deadline = Instant::now() + self.window;
            }
        }
    }
}
