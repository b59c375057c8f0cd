//! amesh-cni: the chained CNI plugin. The runtime execs it once per pod
//! and command, with the network config on stdin and the `CNI_*`
//! environment; it asks the amesh node agent to enroll the pod and passes
//! the previous plugin's result through. The logic is in
//! [`amesh_cni::cni::plugin`]; this is the process edge: logging, stdin,
//! stdout, exit status.

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::process::ExitCode;
use std::sync::Mutex;

use amesh_cni::cni::plugin::env::{CNI_COMMAND, CNI_CONTAINERID};
use amesh_cni::cni::plugin::netconf::{self, LogSettings};
use amesh_cni::cni::plugin::{CniEnv, Outcome, PluginError, run};
use tracing::{error, warn};
use tracing_subscriber::EnvFilter;

/// Far more than any network config (a GC list of many attachments is the
/// largest); more is cut and fails to decode.
const MAX_STDIN: u64 = 16 << 20;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(MAX_STDIN)
        .read_to_end(&mut stdin);
    // Logging comes from the config; stderr at info when it does not parse.
    init_logging(&LogSettings::from_config(&stdin));
    let env = CniEnv::from_process();
    let _span = tracing::info_span!(
        "amesh-cni",
        command = %var(CNI_COMMAND),
        container = %var(CNI_CONTAINERID),
    )
    .entered();

    let outcome = match read {
        Ok(_) => run(&stdin, &env),
        Err(err) => {
            let err = PluginError::Stdin(err.to_string());
            error!("{err}");
            Outcome::failure(&err, netconf::DEFAULT_VERSION)
        }
    };
    if let Some(out) = &outcome.stdout {
        let mut stdout = std::io::stdout().lock();
        if let Err(err) = stdout.write_all(out).and_then(|()| stdout.flush()) {
            error!("writing the result to stdout: {err}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::from(outcome.exit_code)
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn init_logging(settings: &LogSettings) {
    let (filter, bad_level) = match EnvFilter::try_new(&settings.level) {
        Ok(filter) => (filter, None),
        Err(err) => (EnvFilter::new(netconf::DEFAULT_LOG_LEVEL), Some(err)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false);
    let file = settings.file.as_ref().map(|path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|err| format!("cannot open log file {}: {err}", path.display()))
    });
    // A second subscriber cannot exist in this process; ignore the error.
    let file_err = match file {
        Some(Ok(file)) => {
            let _ = builder.with_writer(Mutex::new(file)).try_init();
            None
        }
        Some(Err(err)) => {
            let _ = builder.with_writer(std::io::stderr).try_init();
            Some(err)
        }
        None => {
            let _ = builder.with_writer(std::io::stderr).try_init();
            None
        }
    };
    if let Some(err) = file_err {
        warn!("{err}; logging to stderr");
    }
    if let Some(err) = bad_level {
        warn!("invalid logLevel {:?}: {err}; using info", settings.level);
    }
}
