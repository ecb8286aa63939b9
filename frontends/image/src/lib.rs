//! The ImageService's host side: the registry client, the content store,
//! the layer unpacker, pulls and offline imports. The CRI rules (how a
//! name finds an image, filters, what a removal removes, platform choice)
//! are in `crisp_core::cri::images`; this crate does the I/O around them,
//! with its own [`Settings`] (crispd makes them from its config).
//!
//! Every method here blocks (network, disk): dispatch runs them on the
//! worker pool, never on the event loop.

pub mod import;
mod oci;
pub mod persist;
mod pull;
pub mod registry;
mod settings;
mod stop;
pub mod store;
mod transport;
/// The layer unpacker (fuzzed through `unpack::fuzz_unpack`).
pub mod unpack;

pub use settings::{RegistryConfig, Settings};
pub use stop::Stop;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crisp_core::cri::images::{self as rules, ImageUser, Platform};
use crisp_core::cri::reference::Digest;
use crisp_core::grpc::{Code, Status};
use crisp_proto::cri;

use registry::{ErrorKind, Registries, RegistryError};
use store::{ImageRecord, Store};

/// Why an image operation failed; becomes the call's gRPC status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageError {
    pub code: Code,
    pub message: String,
}

impl ImageError {
    fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(Code::NotFound, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, m)
    }
    /// Content that fails verification or is unsafe.
    pub fn corrupt(m: impl Into<String>) -> Self {
        Self::new(Code::DataLoss, m)
    }
    pub fn unsupported(m: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(Code::Internal, m)
    }
    /// Out of room: a size cap, or the disk.
    pub fn exhausted(m: impl Into<String>) -> Self {
        Self::new(Code::ResourceExhausted, m)
    }
    /// The work was stopped (`code`: Cancelled or DeadlineExceeded).
    pub fn stopped(code: Code, what: &str) -> Self {
        let why = if code == Code::DeadlineExceeded {
            "the caller's deadline passed"
        } else {
            "its caller went away"
        };
        Self::new(code, format!("{what} stopped: {why}"))
    }
    /// Whether this is the result of work stopped for its waiters.
    pub(crate) fn is_stop(&self) -> bool {
        matches!(self.code, Code::Cancelled | Code::DeadlineExceeded)
    }
    /// A local disk operation failed.
    pub fn local(what: &str, e: std::io::Error) -> Self {
        Self::new(Code::Internal, format!("cannot {what}: {e}"))
    }
    pub fn to_status(&self) -> Status {
        Status::new(self.code, self.message.clone())
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<RegistryError> for ImageError {
    fn from(e: RegistryError) -> Self {
        let code = match e.kind {
            ErrorKind::Unreachable => Code::Unavailable,
            ErrorKind::Unauthorized => Code::Unauthenticated,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::Protocol => Code::FailedPrecondition,
        };
        Self::new(code, e.message)
    }
}

type PullResult = Result<String, ImageError>;

/// Work that concurrent callers share: the first caller of a key runs
/// it, later ones wait for its result. The work goes on while one of its
/// callers still waits ([`Stop::all_of`]); a waiter that goes away
/// returns at once.
#[derive(Default)]
struct Flights {
    map: Mutex<HashMap<String, Arc<Flight>>>,
}

struct Flight {
    result: Mutex<Option<PullResult>>,
    done: Condvar,
    /// Every caller's stop: the work stops when all have.
    stop: Stop,
    /// Callers waiting for the leader (for tests and logs).
    waiters: std::sync::atomic::AtomicUsize,
}

impl Flights {
    /// Run `work` for `key`, or wait for the run in progress. `work` gets
    /// the flight's shared stop, already entered on this thread.
    fn run(&self, key: &str, stop: &Stop, work: impl FnOnce(&Stop) -> PullResult) -> PullResult {
        let mut work = Some(work);
        loop {
            let (flight, leader) = {
                let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
                match map.get(key) {
                    Some(f) => {
                        f.stop.join(stop.clone());
                        (Arc::clone(f), false)
                    }
                    None => {
                        let f = Arc::new(Flight {
                            result: Mutex::new(None),
                            done: Condvar::new(),
                            stop: Stop::all_of(stop.clone()),
                            waiters: Default::default(),
                        });
                        map.insert(key.to_owned(), Arc::clone(&f));
                        (f, true)
                    }
                }
            };
            if !leader {
                tracing::debug!(key, "waiting for the same work in progress");
                flight.waiters.fetch_add(1, Ordering::SeqCst);
                let mut result = flight.result.lock().unwrap_or_else(|p| p.into_inner());
                while result.is_none() {
                    if let Some(code) = stop.reason() {
                        return Err(ImageError::stopped(code, key));
                    }
                    result = flight
                        .done
                        .wait_timeout(result, std::time::Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                let result = result.clone().expect("checked above");
                // The work stopped because its other waiters went away
                // before this one joined: run it again for this one.
                if result.as_ref().is_err_and(ImageError::is_stop) && stop.reason().is_none() {
                    continue;
                }
                return result;
            }
            let Some(work) = work.take() else {
                return Err(ImageError::internal(format!(
                    "{key}: crispd bug: ran twice"
                )));
            };
            let result = {
                let _entered = stop::enter(&flight.stop);
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&flight.stop)))
                    .unwrap_or_else(|_| {
                        Err(ImageError::internal(format!("{key}: crispd bug: panicked")))
                    })
            };
            // Forgotten first, so that a caller arriving now starts anew.
            self.map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
            *flight.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(result.clone());
            flight.done.notify_all();
            return result;
        }
    }
}

/// Decides whether an image may be deleted: `Some(who)` names the
/// container that still uses it. Containers come later; until then no
/// image is in use.
pub type InUse = Box<dyn Fn(&ImageRecord) -> Option<String> + Send + Sync>;

pub struct ImageService {
    store: Store,
    registries: Registries,
    flights: Flights,
    platform: Platform,
    /// Decompressed size caps and the free space to keep.
    limits: pull::Limits,
    /// Layer downloads at once, over all pulls.
    downloads: pull::Downloads,
    /// A GC was skipped because a pull or import was running.
    gc_deferred: AtomicBool,
    in_use: InUse,
    /// Told of every pull's layer downloads (`crispd pull`'s bars).
    observer: Option<Arc<dyn PullObserver>>,
}

/// Watches pulls' downloads as they go, from the pull's threads: the
/// command line's progress bars. The daemon has none (it logs progress).
pub trait PullObserver: Send + Sync {
    /// A pull fetches these layers (digest, compressed size), those
    /// already in the store included.
    fn pull_started(&self, image: &str, layers: &[(String, u64)]);
    /// `n` more compressed bytes of `layer` arrived.
    fn layer_bytes(&self, layer: &str, n: u64);
    /// `layer` is in the store (fetched, or there already).
    fn layer_done(&self, layer: &str);
    /// The pull of `image` is over, done or failed.
    fn pull_finished(&self, _image: &str) {}
}

/// Why the [`ImageService`] cannot start.
#[derive(Debug)]
pub enum OpenError {
    /// The content store's directory is unusable.
    Store {
        root: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The registry settings are invalid.
    Settings(registry::SettingsError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store { root, source } => {
                write!(
                    f,
                    "cannot open the image store {}: {source}",
                    root.display()
                )
            }
            Self::Settings(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {}

impl ImageService {
    /// Open the store in `settings.store_dir` and clean up after any
    /// crash (temporaries, unreferenced content).
    pub fn new(settings: &Settings) -> Result<Self, OpenError> {
        let root = &settings.store_dir;
        let store = Store::open(root).map_err(|source| OpenError::Store {
            root: root.clone(),
            source,
        })?;
        let registries = Registries::new(settings).map_err(OpenError::Settings)?;
        let svc = Self {
            store,
            registries,
            flights: Flights::default(),
            platform: Platform::from_rust(std::env::consts::OS, std::env::consts::ARCH),
            limits: pull::Limits {
                max_layer_bytes: settings.max_layer_bytes,
                max_image_bytes: settings.max_image_bytes,
                min_free_bytes: settings.min_free_bytes,
                max_parallel_layers: settings.max_parallel_layers,
            },
            downloads: pull::Downloads::new(settings.max_concurrent_downloads),
            gc_deferred: AtomicBool::new(false),
            in_use: Box::new(|_| None),
            observer: None,
        };
        svc.collect_garbage();
        Ok(svc)
    }

    /// Install the watcher of pulls' downloads.
    pub fn set_observer(&mut self, observer: Arc<dyn PullObserver>) {
        self.observer = Some(observer);
    }

    /// Install the check RemoveImage asks before deleting an image.
    pub fn set_in_use(&mut self, check: InUse) {
        self.in_use = check;
    }

    fn collect_garbage(&self) {
        match self.store.gc() {
            Ok(Some(_)) => self.gc_deferred.store(false, Ordering::Relaxed),
            Ok(None) => self.gc_deferred.store(true, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "image garbage collection failed"),
        }
    }

    fn collect_deferred_garbage(&self) {
        if self.gc_deferred.load(Ordering::Relaxed) {
            self.collect_garbage();
        }
    }

    fn records(&self) -> Result<Vec<ImageRecord>, ImageError> {
        self.store
            .records()
            .map_err(|e| ImageError::local("read the image records", e))
    }

    /// ListImages: every image, or those the filter selects.
    pub fn list(&self, filter: &str) -> Result<Vec<cri::Image>, ImageError> {
        let records = self.records()?;
        let names: Vec<_> = records.iter().map(ImageRecord::names).collect();
        Ok(rules::filter(&names, filter)
            .into_iter()
            .map(|i| to_cri(&records[i]))
            .collect())
    }

    /// ImageStatus: the image `query` names, if any, with verbose info.
    pub fn status(
        &self,
        query: &str,
        verbose: bool,
    ) -> Result<(Option<cri::Image>, HashMap<String, String>), ImageError> {
        let records = self.records()?;
        let names: Vec<_> = records.iter().map(ImageRecord::names).collect();
        let Some(i) = rules::find(&names, query) else {
            return Ok((None, HashMap::new()));
        };
        let record = &records[i];
        let mut info = HashMap::new();
        if verbose {
            info.insert("info".to_owned(), self.verbose_info(record).to_string());
        }
        Ok((Some(to_cri(record)), info))
    }

    fn verbose_info(&self, r: &ImageRecord) -> serde_json::Value {
        let config = Digest::parse(&r.id)
            .ok()
            .and_then(|d| self.store.read_blob(&d).ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        let layers: Vec<serde_json::Value> = r
            .layers
            .iter()
            .map(|l| {
                let path = Digest::parse(&l.diff_id)
                    .map(|d| self.store.layer_path(&d).display().to_string())
                    .unwrap_or_default();
                serde_json::json!({
                    "digest": l.digest,
                    "diffID": l.diff_id,
                    "size": l.size,
                    "mediaType": l.media_type,
                    "path": path,
                })
            })
            .collect();
        serde_json::json!({
            "id": r.id,
            "repoTags": r.repo_tags,
            "repoDigests": r.repo_digests,
            "size": r.size,
            "platform": r.platform,
            "manifestDigest": r.manifest_digest,
            "indexDigest": r.index_digest,
            "created": r.created,
            "source": r.source,
            "layers": layers,
            "imageSpec": config,
        })
    }

    /// What a container's root filesystem is made of: the image `query`
    /// names, its unpacked layer directories (topmost first, as overlayfs
    /// wants its lower dirs) and its config document.
    pub fn resolve(
        &self,
        query: &str,
    ) -> Result<(ImageRecord, Vec<std::path::PathBuf>, Vec<u8>), ImageError> {
        let records = self.records()?;
        let names: Vec<_> = records.iter().map(ImageRecord::names).collect();
        let Some(i) = rules::find(&names, query) else {
            return Err(ImageError::not_found(format!("image {query:?} not found")));
        };
        let record = records[i].clone();
        let mut layers = Vec::new();
        for l in record.layers.iter().rev() {
            let d = Digest::parse(&l.diff_id)
                .map_err(|e| ImageError::corrupt(format!("layer {}: {e}", l.diff_id)))?;
            if !self.store.has_layer(&d) {
                return Err(ImageError::corrupt(format!(
                    "image {} lacks its unpacked layer {}",
                    record.id, l.diff_id
                )));
            }
            layers.push(self.store.layer_path(&d));
        }
        let config = Digest::parse(&record.id)
            .map_err(|e| ImageError::corrupt(format!("image id {}: {e}", record.id)))
            .and_then(|d| {
                self.store
                    .read_blob(&d)
                    .map_err(|e| ImageError::local("read the image config", e))
            })?;
        Ok((record, layers, config))
    }

    /// RemoveImage: delete the image a name finds, with all its names
    /// (idempotent), then collect garbage.
    pub fn remove(&self, query: &str) -> Result<(), ImageError> {
        let done = self
            .store
            .remove(query, &*self.in_use)
            .map_err(|e| ImageError::local("update the image records", e))?;
        match done {
            store::Removal::InUse(user) => Err(ImageError::unsupported(format!(
                "image {query} is in use by {user}"
            ))),
            store::Removal::NotFound => Ok(()),
            store::Removal::Removed(removed) => {
                tracing::info!(
                    image = query,
                    id = %removed.id,
                    tags = ?removed.repo_tags,
                    "removed image"
                );
                self.collect_garbage();
                Ok(())
            }
        }
    }

    /// The names of the image with ID `id`, from memory (no disk I/O: the
    /// event loop asks this for every ContainerStatus).
    pub fn names_of(&self, id: &str) -> Option<rules::ImageNames> {
        self.store.names_of(id)
    }

    /// ImageFsInfo: what the store uses on its filesystem.
    pub fn fs_info(&self) -> Result<cri::ImageFsInfoResponse, ImageError> {
        let (bytes, inodes) = self
            .store
            .usage()
            .map_err(|e| ImageError::local("measure the image store", e))?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let usage = cri::FilesystemUsage {
            timestamp,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: self.store.root().display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: bytes }),
            inodes_used: Some(cri::UInt64Value { value: inodes }),
        };
        Ok(cri::ImageFsInfoResponse {
            image_filesystems: vec![usage],
            container_filesystems: Vec::new(),
        })
    }
}

/// The CRI view of a record.
fn to_cri(r: &ImageRecord) -> cri::Image {
    let (uid, username) = match rules::parse_user(&r.user) {
        ImageUser::Unset => (None, String::new()),
        ImageUser::Uid(u) => (Some(cri::Int64Value { value: u }), String::new()),
        ImageUser::Name(n) => (None, n),
    };
    cri::Image {
        id: r.id.clone(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: r.id.clone(),
            ..cri::ImageSpec::default()
        }),
        pinned: false,
    }
}

/// `crispd images`: a table like `crictl images`.
pub fn print_table(records: &[ImageRecord], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut rows = vec![(
        "IMAGE".to_string(),
        "TAG".to_string(),
        "IMAGE ID".to_string(),
        "SIZE".to_string(),
    )];
    for r in records {
        let short = r.id.split_once(':').map_or(r.id.as_str(), |(_, h)| h);
        let short = short.get(..13).unwrap_or(short).to_string();
        let size = human_size(r.size);
        let mut named = false;
        for t in &r.repo_tags {
            if let Some((repo, tag)) = t.rsplit_once(':') {
                rows.push((repo.to_owned(), tag.to_owned(), short.clone(), size.clone()));
                named = true;
            }
        }
        if !named {
            for d in &r.repo_digests {
                let repo = d.split_once('@').map_or(d.as_str(), |(r, _)| r);
                rows.push((
                    repo.to_owned(),
                    "<none>".into(),
                    short.clone(),
                    size.clone(),
                ));
            }
        }
    }
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0);
    for (a, b, c, d) in rows {
        writeln!(out, "{a:w0$}   {b:w1$}   {c:w2$}   {d}")?;
    }
    Ok(())
}

fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        return format!("{n}B");
    }
    let s = format!("{v:.3}");
    format!(
        "{}{}",
        s.trim_end_matches('0').trim_end_matches('.'),
        UNITS[u]
    )
}

/// Pull from the command line (`crispd pull`) into the store directly:
/// safe whether or not a crispd runs on the same state directory (the
/// store's locks). Progress goes to the log (stderr) every two seconds.
pub fn pull_cli(
    settings: &Settings,
    image: &str,
    credentials: &registry::Credentials,
) -> Result<String, String> {
    pull_cli_observed(settings, image, credentials, None)
}

/// [`pull_cli`], its downloads told to `observer`.
pub fn pull_cli_observed(
    settings: &Settings,
    image: &str,
    credentials: &registry::Credentials,
    observer: Option<Arc<dyn PullObserver>>,
) -> Result<String, String> {
    let mut svc = ImageService::new(settings).map_err(|e| e.to_string())?;
    if let Some(o) = observer {
        svc.set_observer(o);
    }
    svc.pull(image, credentials, &Stop::never())
        .map_err(|e| e.message)
}

/// Import from the command line (`crispd import`): works whether or not
/// a crispd is running on the same state directory.
pub fn import_cli(
    settings: &Settings,
    path: &Path,
    name: Option<&str>,
) -> Result<Vec<import::Imported>, String> {
    let svc = ImageService::new(settings).map_err(|e| e.to_string())?;
    svc.import(path, name).map_err(|e| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_000), "1kB");
        assert_eq!(human_size(2_156_000), "2.156MB");
        assert_eq!(human_size(4_500_000_000), "4.5GB");
    }

    #[test]
    fn flights_share_one_run() {
        let flights = Arc::new(Flights::default());
        let leader = {
            let flights = Arc::clone(&flights);
            std::thread::spawn(move || {
                flights.run("k", &Stop::never(), |_| {
                    // Finish only once the second caller waits on us.
                    loop {
                        let waiting = flights
                            .map
                            .lock()
                            .unwrap()
                            .get("k")
                            .map(|f| f.waiters.load(Ordering::SeqCst))
                            .unwrap_or(0);
                        if waiting == 1 {
                            break;
                        }
                        std::thread::yield_now();
                    }
                    Ok("from-leader".into())
                })
            })
        };
        while !flights.map.lock().unwrap().contains_key("k") {
            std::thread::yield_now();
        }
        let follower = flights.run("k", &Stop::never(), |_| Ok("from-follower".into()));
        assert_eq!(follower.unwrap(), "from-leader");
        assert_eq!(leader.join().unwrap().unwrap(), "from-leader");
        // Done flights are forgotten: the next caller runs again.
        assert_eq!(
            flights
                .run("k", &Stop::never(), |_| Ok("again".into()))
                .unwrap(),
            "again"
        );
    }

    #[test]
    fn shared_work_stops_when_its_last_waiter_goes() {
        let flights = Arc::new(Flights::default());
        let first = Stop::never();
        let second = Stop::never();
        let leader = {
            let (flights, first) = (Arc::clone(&flights), first.clone());
            std::thread::spawn(move || {
                flights.run("k", &first, |shared| {
                    // Runs until every waiter has gone.
                    while shared.reason().is_none() {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(ImageError::stopped(shared.reason().unwrap(), "k"))
                })
            })
        };
        while !flights.map.lock().unwrap().contains_key("k") {
            std::thread::yield_now();
        }
        let follower = {
            let (flights, second) = (Arc::clone(&flights), second.clone());
            std::thread::spawn(move || flights.run("k", &second, |_| Ok("mine".into())))
        };
        while flights.map.lock().unwrap()["k"]
            .waiters
            .load(Ordering::SeqCst)
            == 0
        {
            std::thread::yield_now();
        }
        // The leader's caller goes: the work goes on for the follower.
        first.cancel();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!leader.is_finished());
        // The follower goes too: both return, the work stopped.
        second.cancel();
        let f = follower.join().unwrap().unwrap_err();
        assert_eq!(f.code, Code::Cancelled);
        let l = leader.join().unwrap().unwrap_err();
        assert_eq!(l.code, Code::Cancelled);
    }
}
