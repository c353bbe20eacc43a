//! Progress bars for transfers, shown only when stderr is a terminal (and not with --quiet).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const SIZED: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";
const UNSIZED: &str = "{spinner} {msg} {bytes} {binary_bytes_per_sec} {elapsed}";

/// A transfer's progress bar; hidden when stderr is not a terminal, cleared when dropped.
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar labelled `msg`, not shown until [`Bar::start`].
    pub fn new(msg: &str) -> Self {
        let bar = ProgressBar::hidden();
        bar.set_message(msg.to_owned());
        Self(bar)
    }

    /// Starts showing the bar (if stderr is a terminal), with the total if known.
    pub fn start(&self, total: Option<u64>) {
        let template = if total.is_some() { SIZED } else { UNSIZED };
        if let Ok(style) = ProgressStyle::with_template(template) {
            self.0.set_style(style.progress_chars("=> "));
        }
        if let Some(total) = total {
            self.0.set_length(total);
        }
        self.0.reset_elapsed();
        if std::io::stderr().is_terminal() && !crate::output::quiet() {
            self.0.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    /// Changes the label (a folder transfer's count of files).
    pub fn label(&self, msg: &str) {
        self.0.set_message(msg.to_owned());
    }

    /// Bytes moved so far.
    pub fn set(&self, bytes: u64) {
        self.0.set_position(bytes);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
