//! Live progress: a bar on a terminal, a plain line every few seconds
//! elsewhere (CI logs, systemd), nothing when quiet.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use super::human_bytes;
use crate::progress::{Progress, Stage};

/// How often the terminal bar refreshes.
const BAR_TICK: Duration = Duration::from_millis(200);
/// How often a plain progress line is logged when not on a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A running progress display; stops when dropped or finished.
pub struct Display {
    task: Option<JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

impl Display {
    /// Starts showing `progress` for a bundle of `bundle_bytes` on stderr;
    /// `label` (e.g. `[2/5] cni-calico-3.29.2.zst`) says which bundle when a
    /// command imports several, one after another.
    pub fn start(
        progress: Progress,
        bundle_bytes: u64,
        quiet: bool,
        label: Option<String>,
    ) -> Self {
        if quiet {
            return Display {
                task: None,
                bar: None,
            };
        }
        if std::io::stderr().is_terminal() {
            let bar =
                ProgressBar::with_draw_target(Some(bundle_bytes), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            let shown = bar.clone();
            let task = tokio::spawn(async move {
                loop {
                    update_bar(&shown, &progress, bundle_bytes, label.as_deref());
                    tokio::time::sleep(BAR_TICK).await;
                }
            });
            return Display {
                task: Some(task),
                bar: Some(bar),
            };
        }
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LOG_EVERY).await;
                match &label {
                    Some(label) => eprintln!("airlock: {label}: {}", line(&progress, bundle_bytes)),
                    None => eprintln!("airlock: {}", line(&progress, bundle_bytes)),
                }
            }
        });
        Display {
            task: Some(task),
            bar: None,
        }
    }

    /// Stops the display and clears the bar.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop();
    }
}

fn update_bar(bar: &ProgressBar, progress: &Progress, bundle_bytes: u64, label: Option<&str>) {
    let stage = progress.stage();
    bar.set_prefix(stage.label());
    let message = match stage {
        Stage::Verifying | Stage::Indexing | Stage::VerifyingAndIndexing => {
            bar.set_length(bundle_bytes);
            bar.set_position(progress.bundle_bytes());
            String::new()
        }
        Stage::Uploading | Stage::Checking | Stage::Tagging | Stage::Done => {
            bar.set_length(progress.bytes_to_push().max(1));
            bar.set_position(progress.pushed_bytes());
            format!("{} blobs done", progress.blobs_done())
        }
    };
    match label {
        Some(label) => bar.set_message(format!("{label} {message}")),
        None => bar.set_message(message),
    }
}

/// One plain progress line.
pub fn line(progress: &Progress, bundle_bytes: u64) -> String {
    match progress.stage() {
        stage @ (Stage::Verifying | Stage::Indexing | Stage::VerifyingAndIndexing) => format!(
            "{}: {} of {} read",
            stage.label(),
            human_bytes(progress.bundle_bytes()),
            human_bytes(bundle_bytes)
        ),
        stage => format!(
            "{}: {} of {} sent, {} blobs done",
            stage.label(),
            human_bytes(progress.pushed_bytes()),
            human_bytes(progress.bytes_to_push()),
            progress.blobs_done()
        ),
    }
}
