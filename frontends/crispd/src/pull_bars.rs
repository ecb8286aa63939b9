//! `crispd pull`'s progress: on a terminal a bar per layer and one for the
//! whole image (bytes, rate, ETA) with indicatif; otherwise plain lines,
//! the whole image's bytes every few seconds. Pulling through the daemon,
//! the command follows the daemon's progress files ([`PullFiles`]).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crisp_image::PullObserver;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// The daemon's pulls in progress, for `crispd pull` through the daemon
/// to show (the CRI has no call that reports a pull's progress): one JSON
/// file per pulled reference under `<runtime_dir>/pulls/`, named by the
/// SHA-256 of the normalised reference ([`progress_file`]), rewritten at
/// most every [`FILE_EVERY`] and removed when the pull ends.
pub struct PullFiles {
    dir: PathBuf,
    pulls: Mutex<HashMap<String, FilePull>>,
}

/// How often a pull's progress file is rewritten while bytes arrive.
const FILE_EVERY: Duration = Duration::from_millis(250);

struct FilePull {
    layers: Vec<LayerProgress>,
    written: Instant,
}

/// One layer in a progress file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LayerProgress {
    pub digest: String,
    pub total: u64,
    pub done: u64,
    pub finished: bool,
}

/// A progress file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PullFile {
    pub image: String,
    pub layers: Vec<LayerProgress>,
}

/// Where the daemon keeps the progress of pulling `image` (as PullImage
/// names it: normalised here the way the daemon does), if it parses.
pub fn progress_file(runtime_dir: &Path, image: &str) -> Option<PathBuf> {
    let reference = crisp_core::cri::reference::Reference::parse_normalized(image.trim()).ok()?;
    Some(progress_path(
        &runtime_dir.join("pulls"),
        &reference.to_string(),
    ))
}

fn progress_path(dir: &Path, image: &str) -> PathBuf {
    let hash = Sha256::digest(image.as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{hex}.json"))
}

impl PullFiles {
    /// Under `runtime_dir`; progress files a crash left are removed.
    pub fn new(runtime_dir: &Path) -> Self {
        let dir = runtime_dir.join("pulls");
        let _ = std::fs::remove_dir_all(&dir);
        Self {
            dir,
            pulls: Mutex::new(HashMap::new()),
        }
    }

    fn write(&self, image: &str, layers: &[LayerProgress]) {
        let file = PullFile {
            image: image.to_owned(),
            layers: layers.to_vec(),
        };
        let Ok(bytes) = serde_json::to_vec(&file) else {
            return;
        };
        if let Err(e) = crate::persist::write_runtime(&progress_path(&self.dir, image), &bytes) {
            tracing::debug!(image, error = %e, "cannot write the pull's progress file");
        }
    }
}

impl PullObserver for PullFiles {
    fn pull_started(&self, image: &str, layers: &[(String, u64)]) {
        let layers: Vec<LayerProgress> = layers
            .iter()
            .map(|(digest, total)| LayerProgress {
                digest: digest.clone(),
                total: *total,
                ..LayerProgress::default()
            })
            .collect();
        self.write(image, &layers);
        lock(&self.pulls).insert(
            image.to_owned(),
            FilePull {
                layers,
                written: Instant::now(),
            },
        );
    }

    fn layer_bytes(&self, layer: &str, n: u64) {
        let mut pulls = lock(&self.pulls);
        for (image, p) in pulls.iter_mut() {
            let Some(l) = p.layers.iter_mut().find(|l| l.digest == layer) else {
                continue;
            };
            l.done += n;
            if p.written.elapsed() >= FILE_EVERY {
                p.written = Instant::now();
                self.write(image, &p.layers);
            }
        }
    }

    fn layer_done(&self, layer: &str) {
        let mut pulls = lock(&self.pulls);
        for (image, p) in pulls.iter_mut() {
            let Some(l) = p.layers.iter_mut().find(|l| l.digest == layer) else {
                continue;
            };
            l.finished = true;
            p.written = Instant::now();
            self.write(image, &p.layers);
        }
    }

    fn pull_finished(&self, image: &str) {
        lock(&self.pulls).remove(image);
        let _ = std::fs::remove_file(progress_path(&self.dir, image));
    }
}

/// Shows a progress file's changes through a [`PullProgress`]: what is
/// new since the last look, as the daemon's pull reported it.
#[derive(Default)]
pub struct FileFollower {
    started: bool,
    /// By layer: (total, done, finished) as last shown.
    seen: HashMap<String, (u64, u64, bool)>,
}

impl FileFollower {
    pub fn look(&mut self, path: &Path, show: &PullProgress) {
        let Some(file) = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<PullFile>(&b).ok())
        else {
            return;
        };
        if !self.started {
            self.started = true;
            let layers: Vec<(String, u64)> = file
                .layers
                .iter()
                .map(|l| (l.digest.clone(), l.total))
                .collect();
            show.pull_started(&file.image, &layers);
        }
        for l in &file.layers {
            let (total, done, finished) = self.seen.entry(l.digest.clone()).or_default();
            *total = l.total;
            if l.done > *done {
                show.layer_bytes(&l.digest, l.done - *done);
                *done = l.done;
            }
            if l.finished && !*finished {
                *finished = true;
                show.layer_done(&l.digest);
            }
        }
    }

    /// The daemon answered the pull OK: the layers the file last showed
    /// unfinished are done (the file goes when the pull ends, which may
    /// be between two looks).
    pub fn complete(&mut self, show: &PullProgress) {
        for (digest, (total, done, finished)) in &mut self.seen {
            if !*finished {
                if *total > *done {
                    show.layer_bytes(digest, *total - *done);
                }
                *finished = true;
                show.layer_done(digest);
            }
        }
    }
}
