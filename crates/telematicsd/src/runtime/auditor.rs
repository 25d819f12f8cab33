//! The audit task: appends the core's audit records (command outcomes) through the security
//! service on the blocking pool: the write fsyncs and takes the security mutex, which a code
//! check holds through PBKDF2, so it never runs on the core task.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::security::SecurityService;

/// Records until `rx` closes.
pub async fn run(
    mut rx: mpsc::UnboundedReceiver<(String, String)>,
    security: Arc<SecurityService>,
) {
    while let Some((kind, detail)) = rx.recv().await {
        let sec = security.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || sec.record(&kind, detail)).await {
            tracing::error!(code = "runtime.task_failed", error = %e, "audit task failed");
        }
    }
}
