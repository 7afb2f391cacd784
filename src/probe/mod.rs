//! Typed probes: checks that `titan-dr probe` runs in place of a shell command, so a step needs
//! no curl, redis-cli or kubectl in its image. A probe prints its output (a response body,
//! `PONG`, a JSON summary) and exits 0, or prints why it failed on stderr and exits 1; the
//! step's `expect` then judges that output and exit code like any command's
//! ([`crate::expect`] is the only judge).
//!
//! - [`http`]: GET a URL, the output is the body;
//! - [`redis`]: PING, or the key count of every database;
//! - [`kubernetes`]: whether every matching Deployment or StatefulSet is ready.

pub mod http;
pub mod kubernetes;
pub mod redis;

use std::time::Duration;

pub use crate::api::probe::{
    HttpProbe, KubernetesProbe, Probe, RedisCheck, RedisProbe, WorkloadKind,
};
pub use crate::names::REDIS_PASSWORD_ENV;

/// Why a probe failed: the message goes to stderr, the output (a response body, say) to
/// stdout, so that `expect` and the person reading the step see both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProbeError {
    pub message: String,
    pub output: String,
}

impl ProbeError {
    pub fn new(message: impl Into<String>) -> Self {
        ProbeError {
            message: message.into(),
            output: String::new(),
        }
    }

    pub fn with_output(mut self, output: impl Into<String>) -> Self {
        self.output = output.into();
        self
    }
}

/// How long a probe waits on its peer when it sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the probe; its output when it passed.
pub async fn run(probe: &Probe) -> Result<String, ProbeError> {
    match (&probe.http, &probe.redis, &probe.kubernetes) {
        (Some(spec), None, None) => http::get(spec).await,
        (None, Some(spec), None) => {
            let password = match &spec.password_secret_ref {
                Some(_) => Some(std::env::var(REDIS_PASSWORD_ENV).map_err(|_| {
                    ProbeError::new(format!(
                        "passwordSecretRef is set but {REDIS_PASSWORD_ENV} is not: outside a \
                         cluster, export the password as {REDIS_PASSWORD_ENV}"
                    ))
                })?),
                None => None,
            };
            let spec = spec.clone();
            tokio::task::spawn_blocking(move || redis::check(&spec, password.as_deref()))
                .await
                .map_err(|e| ProbeError::new(format!("the redis probe panicked: {e}")))?
        }
        (None, None, Some(spec)) => kubernetes::check(spec).await,
        _ => Err(ProbeError::new(
            "set exactly one of http, redis or kubernetes",
        )),
    }
}
