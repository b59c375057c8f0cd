//! A broadcast "start draining" signal for servers and connections.

use tokio::sync::watch;

/// Held by whoever decides to drain.
#[derive(Debug)]
pub struct DrainSignal(watch::Sender<bool>);

/// Held by every task that must react to a drain.
#[derive(Clone, Debug)]
pub struct DrainWatch(watch::Receiver<bool>);

pub fn drain_channel() -> (DrainSignal, DrainWatch) {
    let (tx, rx) = watch::channel(false);
    (DrainSignal(tx), DrainWatch(rx))
}

impl DrainSignal {
    /// Tells every watcher to stop taking new work and finish what it has.
    pub fn drain(&self) {
        self.0.send_replace(true);
    }
}

impl DrainWatch {
    /// Resolves once draining has started (or the signal was dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|draining| *draining).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }
}
