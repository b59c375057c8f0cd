//! Where benchmark work runs. The client side and the server side each get
//! their own single-threaded runtime on their own OS thread, as two separate
//! proxies would have: neither side's work waits for a thread of the other,
//! and they meet only through the kernel's sockets. Mesh and baseline use the
//! same placement.

use std::future::Future;
use std::thread::JoinHandle;

use anyhow::Result;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

#[derive(Debug)]
pub struct Sides {
    client: Runtime,
    server: Handle,
    stop_server: Option<oneshot::Sender<()>>,
    server_thread: Option<JoinHandle<()>>,
}

impl Sides {
    pub fn new() -> Result<Self> {
        let client = Builder::new_current_thread().enable_all().build()?;
        let server_rt = Builder::new_current_thread().enable_all().build()?;
        let server = server_rt.handle().clone();
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server_thread = std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                server_rt.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            client,
            server,
            stop_server: Some(stop_server),
            server_thread: Some(server_thread),
        })
    }

    /// Runs `future` on the client side (the calling thread), to completion.
    pub fn run_client<F: Future>(&self, future: F) -> F::Output {
        self.client.block_on(future)
    }

    /// Handle for spawning server-side work.
    pub fn server(&self) -> Handle {
        self.server.clone()
    }
}

impl Drop for Sides {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.server_thread.take() {
            let _ = thread.join();
        }
    }
}
