//! `testapp` inside pods.

use std::ffi::OsString;
use std::time::Duration;

use anyhow::{Result, bail};

use super::listen::listening_ports;
use super::process::{Process, ProcessSpec, binary};
use super::topology::Mesh;
use super::wait::poll_until;

pub const TESTAPP_BIN: &str = "testapp";
/// How long a testapp gets to bind its ports.
const APP_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which servers a pod's testapp runs (see `src/bin/testapp.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppSpec {
    pub echo_port: Option<u16>,
    pub http_port: Option<u16>,
    pub whoami_port: Option<u16>,
}

impl AppSpec {
    pub fn echo(mut self, port: u16) -> Self {
        self.echo_port = Some(port);
        self
    }

    pub fn http(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }

    pub fn whoami(mut self, port: u16) -> Self {
        self.whoami_port = Some(port);
        self
    }

    fn ports(&self) -> Vec<u16> {
        [self.echo_port, self.http_port, self.whoami_port]
            .into_iter()
            .flatten()
            .collect()
    }
}

impl Mesh {
    /// Runs testapp in `pod` (replacing one already there) and waits until
    /// all its ports listen. Returns its pid.
    pub fn start_app(&mut self, pod: &str, app: AppSpec) -> Result<u32> {
        let ports = app.ports();
        if ports.is_empty() {
            bail!("app for pod {pod}: no ports");
        }
        let Some(p) = self.try_pod(pod) else {
            bail!("mesh has no pod {pod}");
        };
        let netns = p.netns.clone();
        let mut args: Vec<OsString> = vec!["--name".into(), pod.into()];
        for (flag, port) in [
            ("--echo-port", app.echo_port),
            ("--http-port", app.http_port),
            ("--whoami-port", app.whoami_port),
        ] {
            if let Some(port) = port {
                args.push(flag.into());
                args.push(port.to_string().into());
            }
        }
        let spec = ProcessSpec {
            label: format!("testapp {pod}"),
            binary: binary(TESTAPP_BIN)?,
            args,
            env: vec![("RUST_LOG".into(), "info".into())],
            netns: netns.clone(),
            log: self.dir.join("apps").join(format!("{pod}.log")),
        };
        if let Some(mut old) = self.apps.remove(pod) {
            old.kill()?;
        }
        let mut process = Process::spawn(spec)?;
        let ready = poll_until(
            APP_READY_TIMEOUT,
            format!("testapp in {pod} to listen on {ports:?}"),
            || {
                if !process.is_running() {
                    bail!("testapp in {pod} exited ({:?})", process.last_exit());
                }
                let listening = listening_ports(&netns)?;
                Ok(ports.iter().all(|p| listening.contains(p)))
            },
        );
        if let Err(e) = ready {
            let log = process.log_tail(20);
            return Err(e.context(format!("testapp log:\n{log}")));
        }
        let pid = process.pid().unwrap_or_default();
        self.apps.insert(pod.to_string(), process);
        Ok(pid)
    }

    /// SIGTERM the pod's testapp and wait for it (bounded).
    pub fn stop_app(&mut self, pod: &str) -> Result<()> {
        if let Some(mut app) = self.apps.remove(pod) {
            app.stop(Duration::from_secs(5))?;
        }
        Ok(())
    }

    pub fn app(&self, pod: &str) -> Option<&Process> {
        self.apps.get(pod)
    }

    pub fn app_mut(&mut self, pod: &str) -> Option<&mut Process> {
        self.apps.get_mut(pod)
    }
}
