//! `crispd pull`'s progress on the store directly: on a terminal a bar per
//! layer and one for the whole image (bytes, rate, ETA) with indicatif;
//! otherwise plain lines, the whole image's bytes every few seconds.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crisp_image::PullObserver;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain lines report the bytes so far.
const LINE_EVERY: Duration = Duration::from_secs(2);

pub enum PullProgress {
    Bars(Bars),
    Lines(Mutex<Lines>),
}

pub struct Bars {
    multi: MultiProgress,
    overall: Mutex<Option<ProgressBar>>,
    layers: Mutex<HashMap<String, ProgressBar>>,
}

#[derive(Default)]
pub struct Lines {
    total: u64,
    done: u64,
    layers: usize,
    layers_done: usize,
    started: Option<Instant>,
    last: Option<Instant>,
}

impl PullProgress {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Bars(Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                overall: Mutex::new(None),
                layers: Mutex::new(HashMap::new()),
            })
        } else {
            Self::Lines(Mutex::new(Lines::default()))
        }
    }

    /// Clears the bars (the command then prints the image ID).
    pub fn finish(&self) {
        if let Self::Bars(b) = self {
            if let Some(o) = lock(&b.overall).as_ref() {
                o.finish();
            }
            for bar in lock(&b.layers).values() {
                bar.finish();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// `sha256:0123456789ab`: enough of a digest to tell layers apart.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

fn mib(n: u64) -> f64 {
    n as f64 / (1024.0 * 1024.0)
}

impl PullObserver for PullProgress {
    fn pull_started(&self, image: &str, layers: &[(String, u64)]) {
        let total: u64 = layers.iter().map(|(_, n)| n).sum();
        match self {
            Self::Bars(b) => {
                let overall = b.multi.add(ProgressBar::new(total));
                overall.set_style(style(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                ));
                overall.set_message(format!("{image} (0/{} layers)", layers.len()));
                let mut bars = lock(&b.layers);
                for (digest, size) in layers {
                    let bar = b.multi.add(ProgressBar::new(*size));
                    bar.set_style(style(
                        "  {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                    ));
                    bar.set_message(short(digest).to_owned());
                    bars.insert(digest.clone(), bar);
                }
                *lock(&b.overall) = Some(overall);
            }
            Self::Lines(l) => {
                let mut l = lock(l);
                *l = Lines {
                    total,
                    layers: layers.len(),
                    started: Some(Instant::now()),
                    last: Some(Instant::now()),
                    ..Lines::default()
                };
                eprintln!(
                    "crispd pull: {image}: {} layers, {:.1} MiB",
                    layers.len(),
                    mib(total)
                );
            }
        }
    }

    fn layer_bytes(&self, layer: &str, n: u64) {
        match self {
            Self::Bars(b) => {
                if let Some(bar) = lock(&b.layers).get(layer) {
                    bar.inc(n);
                }
                if let Some(o) = lock(&b.overall).as_ref() {
                    o.inc(n);
                }
            }
            Self::Lines(l) => {
                let mut l = lock(l);
                l.done += n;
                if l.last.is_some_and(|t| t.elapsed() >= LINE_EVERY) {
                    l.last = Some(Instant::now());
                    let secs = l.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
                    let rate = if secs > 0.0 {
                        l.done as f64 / secs
                    } else {
                        0.0
                    };
                    let eta = if rate > 0.0 && l.total > l.done {
                        format!("{:.0} s", (l.total - l.done) as f64 / rate)
                    } else {
                        "-".to_owned()
                    };
                    eprintln!(
                        "crispd pull: {:.1}/{:.1} MiB, {:.1} MiB/s, ETA {eta}",
                        mib(l.done),
                        mib(l.total),
                        mib(rate as u64)
                    );
                }
            }
        }
    }

    fn layer_done(&self, layer: &str) {
        match self {
            Self::Bars(b) => {
                if let Some(bar) = lock(&b.layers).get(layer) {
                    // A layer already in the store downloaded nothing.
                    bar.set_position(bar.length().unwrap_or(0));
                    bar.finish();
                }
                if let Some(o) = lock(&b.overall).as_ref() {
                    let done = lock(&b.layers).values().filter(|b| b.is_finished()).count();
                    let all = lock(&b.layers).len();
                    let msg = o.message();
                    let image = msg.split(" (").next().unwrap_or_default().to_owned();
                    o.set_message(format!("{image} ({done}/{all} layers)"));
                }
            }
            Self::Lines(l) => {
                let mut l = lock(l);
                l.layers_done += 1;
                eprintln!(
                    "crispd pull: layer {} done ({}/{})",
                    short(layer),
                    l.layers_done,
                    l.layers
                );
            }
        }
    }
}
