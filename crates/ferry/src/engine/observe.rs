//! Every answered request is counted (the server's [`Metrics`](crate::metrics::Metrics), by
//! operation and outcome) and, if it changed or handed out data or was refused, written as an
//! audit line: target `ferry::audit`, with the operation, the principal, the source and the
//! outcome as fields. Never a secret, a password or content: names and numbers only.

use super::{Core, Outcome, Refusal};
use crate::metrics::code_name;

/// The `tracing` target of audit lines.
pub(crate) const AUDIT: &str = "ferry::audit";

/// How a request was answered, for [`Core::record`].
pub(crate) enum Answer<'a, T> {
    /// It was done; the value answered.
    Done(&'a T),
    /// It was refused, and the client told why.
    Refused(&'a Refusal),
    /// The server failed (the connection closes).
    Failed(&'a dyn std::fmt::Display),
    /// The connection ended before the request did.
    Cut,
}

impl Core {
    /// Counts the answer to `op` on `source` (a name or a prefix) by the principal `who`,
    /// and audits it: always when it was refused or failed, and when it was done if
    /// `detail` says what was done (`None`: a read that needs no audit line, such as a stat).
    pub(crate) fn answered<T>(
        &self,
        op: &'static str,
        who: &str,
        source: &str,
        outcome: &Outcome<T>,
        detail: impl FnOnce(&T) -> Option<String>,
    ) {
        let answer = match outcome {
            Ok(Ok(value)) => Answer::Done(value),
            Ok(Err(refusal)) => Answer::Refused(refusal),
            Err(e) => Answer::Failed(e),
        };
        self.record(op, who, source, answer, detail);
    }

    /// [`Core::answered`] for an answer that is not an [`Outcome`].
    pub(crate) fn record<T>(
        &self,
        op: &'static str,
        who: &str,
        source: &str,
        answer: Answer<'_, T>,
        detail: impl FnOnce(&T) -> Option<String>,
    ) {
        match answer {
            Answer::Done(value) => {
                self.metrics.request(op, "ok");
                if let Some(detail) = detail(value) {
                    tracing::info!(
                        target: AUDIT,
                        op,
                        principal = who,
                        source,
                        outcome = "ok",
                        "{op} {detail}"
                    );
                }
            }
            Answer::Refused(refusal) => {
                let outcome = code_name(refusal.code);
                self.metrics.request(op, outcome);
                tracing::info!(
                    target: AUDIT,
                    op,
                    principal = who,
                    source,
                    outcome,
                    "{op} refused: {}",
                    refusal.message
                );
            }
            Answer::Failed(e) => {
                self.metrics.request(op, "failed");
                tracing::warn!(
                    target: AUDIT,
                    op,
                    principal = who,
                    source,
                    outcome = "failed",
                    "{op} failed: {e}"
                );
            }
            Answer::Cut => {
                self.metrics.request(op, "cut");
                tracing::info!(
                    target: AUDIT,
                    op,
                    principal = who,
                    source,
                    outcome = "cut",
                    "{op} cut off: the connection ended first"
                );
            }
        }
    }
}
