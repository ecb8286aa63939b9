//! The content store under `<state_dir>/images`:
//!
//! ```text
//! images/
//!   blobs/sha256/<hex>      manifests, indexes and configs, by digest
//!   layers/sha256/<hex>/    one unpacked layer per diff ID, an overlayfs lower dir
//!   records/<hex>.json      one record per image (ID = config digest)
//!   tmp/                    downloads and unpacks in progress
//!   lock                    flock: record changes and garbage collection
//!   users.lock              flock: shared by every pull and import, exclusive for GC
//! ```
//!
//! Crash safety: content is written under `tmp/`, fsynced, and renamed
//! into place only once verified; a record is written (temp, fsync,
//! rename, fsync dir) only after all its content is in place. So a crash
//! at any point leaves no image visible that is not whole; what it leaves
//! in `tmp/` is removed by the next garbage collection (at start, after
//! removals, after pulls).
//!
//! Concurrency: several threads of crispd and `crispd import` processes
//! may work on one store. Record changes take `lock` exclusively. Pulls
//! and imports hold `users.lock` shared for their whole run; GC deletes
//! content only when it can take `users.lock` exclusively, that is when
//! no pull or import is under way anywhere, since their content may not
//! be referenced by a record yet. Two writers of the same blob or layer
//! each write their own temporary copy; the first rename wins.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crisp_core::cri::images::{self as rules, ImageNames};
use crisp_core::cri::reference::{Digest, Reference};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::unpack;
use crate::persist;

/// What crispd knows about one image.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// `sha256:<hex>` of the config: the image ID.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Config plus layer blobs as the registry stores them (compressed):
    /// what `crictl images` shows, as containerd reports it.
    pub size: u64,
    /// The platform manifest, if the image came with one.
    #[serde(default)]
    pub manifest_digest: Option<String>,
    /// The index (manifest list) the manifest was chosen from, if any.
    #[serde(default)]
    pub index_digest: Option<String>,
    /// `os/arch[/variant]`.
    #[serde(default)]
    pub platform: String,
    /// The config's `User`.
    #[serde(default)]
    pub user: String,
    /// The config's `created`.
    #[serde(default)]
    pub created: Option<String>,
    /// Bottom layer first.
    pub layers: Vec<LayerRecord>,
    /// Where it came from, for people: `pull http://…`, `import /path`.
    #[serde(default)]
    pub source: String,
    /// Store-wide write order: if a crash left a name on two records,
    /// the later write holds it.
    #[serde(default)]
    pub seq: u64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// The blob as distributed (usually compressed).
    pub digest: String,
    /// The uncompressed tar's digest: the unpacked layer's name.
    pub diff_id: String,
    pub size: u64,
    #[serde(default)]
    pub media_type: String,
}

impl ImageRecord {
    pub fn names(&self) -> ImageNames {
        ImageNames {
            id: self.id.clone(),
            repo_tags: self.repo_tags.clone(),
            repo_digests: self.repo_digests.clone(),
        }
    }
}

pub struct Store {
    root: PathBuf,
    /// Sizes of unpacked layers, by directory.
    usage_cache: Mutex<HashMap<PathBuf, (u64, u64)>>,
    /// Every image's names by ID, as the records last read or written
    /// here held them: what ContainerStatus shows without reading the
    /// disk on the event loop. A `crispd import` in another process shows
    /// here at the next read of the records (any image call).
    names: Mutex<HashMap<String, ImageNames>>,
}

/// Held while changing records (and during GC).
pub struct RecordsLock<'a> {
    store: &'a Store,
    _lock: Flock<File>,
}

/// A pull or import in progress: keeps GC from deleting content that no
/// record references yet.
pub struct UserLock {
    _lock: Flock<File>,
}

/// A directory or file under `tmp/`, removed on drop unless kept.
pub struct Temp {
    path: PathBuf,
    keep: bool,
}

impl Temp {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let result = match fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_dir() => unpack::remove_tree(&self.path),
            Ok(_) => fs::remove_file(&self.path),
            Err(_) => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove temporary file");
        }
    }
}

/// What a garbage collection removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    pub blobs: usize,
    pub layers: usize,
    pub temps: usize,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What [`Store::remove`] did.
#[derive(Debug)]
pub enum Removal {
    /// No image has that name.
    NotFound,
    /// The image's record, now deleted.
    Removed(Box<ImageRecord>),
    /// The veto refused: the image is in use by this (e.g. "a container").
    InUse(String),
}

impl Store {
    /// Open (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> io::Result<Self> {
        for dir in ["blobs/sha256", "layers/sha256", "records", "tmp"] {
            fs::create_dir_all(root.join(dir))?;
        }
        Ok(Self {
            root: root.to_owned(),
            usage_cache: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock_file(&self, name: &str, arg: FlockArg) -> io::Result<Option<Flock<File>>> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(name))?;
        match Flock::lock(file, arg) {
            Ok(l) => Ok(Some(l)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(e.into()),
        }
    }

    pub fn lock_records(&self) -> io::Result<RecordsLock<'_>> {
        let lock = self
            .lock_file("lock", FlockArg::LockExclusive)?
            .ok_or_else(|| io::Error::other("lock not taken"))?;
        Ok(RecordsLock {
            store: self,
            _lock: lock,
        })
    }

    /// Announce a pull or import (waits for a GC in progress to finish).
    pub fn user(&self) -> io::Result<UserLock> {
        let lock = self
            .lock_file("users.lock", FlockArg::LockShared)?
            .ok_or_else(|| io::Error::other("lock not taken"))?;
        Ok(UserLock { _lock: lock })
    }

    /// Every image record, with names a crash left on two records given
    /// to the later one. Needs no lock: records are replaced whole.
    pub fn records(&self) -> io::Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("records"))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let data = match fs::read(entry.path()) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match serde_json::from_slice::<ImageRecord>(&data) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(record = %entry.path().display(), error = %e, "ignoring unreadable image record")
                }
            }
        }
        // Later writes win contested names.
        out.sort_by_key(|r| std::cmp::Reverse(r.seq));
        let mut taken = HashSet::new();
        for r in out.iter_mut() {
            r.repo_tags.retain(|t| taken.insert(t.clone()));
            r.repo_digests.retain(|d| taken.insert(d.clone()));
        }
        out.retain(|r| !rules::is_unnamed(&r.names()));
        out.sort_by(|a, b| a.id.cmp(&b.id));
        let names = out.iter().map(|r| (r.id.clone(), r.names())).collect();
        *self.names.lock().unwrap_or_else(|p| p.into_inner()) = names;
        Ok(out)
    }

    /// The names of the image with ID `id` as last seen (see `names`).
    pub fn names_of(&self, id: &str) -> Option<ImageNames> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names.get(id).cloned()
    }

    /// Read the records again after changing them, so that `names_of`
    /// sees the change.
    fn refresh_names(&self) {
        if let Err(e) = self.records() {
            tracing::warn!(error = %e, "cannot read the image records back");
        }
    }

    fn record_path(&self, id: &str) -> PathBuf {
        let hex = id.split_once(':').map_or(id, |(_, h)| h);
        self.root.join("records").join(format!("{hex}.json"))
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("layers")
            .join(diff_id.algorithm().as_str())
            .join(diff_id.hex())
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_path(diff_id).is_dir()
    }

    pub fn read_blob(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        fs::read(self.blob_path(digest))
    }

    /// A fresh directory under `tmp/`.
    pub fn temp_dir(&self, what: &str) -> io::Result<Temp> {
        let path = self.temp_name(what);
        fs::create_dir(&path)?;
        Ok(Temp { path, keep: false })
    }

    fn temp_name(&self, what: &str) -> PathBuf {
        self.root.join("tmp").join(format!(
            "{what}-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Store a verified blob (a manifest, index or config).
    pub fn put_blob(&self, digest: &Digest, data: &[u8]) -> io::Result<()> {
        let dest = self.blob_path(digest);
        if dest.exists() {
            return Ok(());
        }
        let dir = dest.parent().expect("blob paths have a parent");
        fs::create_dir_all(dir)?;
        let mut tmp = Temp {
            path: self.temp_name("blob"),
            keep: false,
        };
        {
            let mut f = File::create(&tmp.path)?;
            f.write_all(data)?;
            f.sync_all()?;
        }
        fs::rename(&tmp.path, &dest)?;
        tmp.keep = true;
        File::open(dir)?.sync_all()
    }

    /// Move a fully unpacked and verified layer into place. If another
    /// writer got there first, theirs stays and ours is dropped.
    pub fn commit_layer(&self, mut tmp: Temp, diff_id: &Digest) -> io::Result<()> {
        let dest = self.layer_path(diff_id);
        let dir = dest.parent().expect("layer paths have a parent");
        fs::create_dir_all(dir)?;
        nix::unistd::syncfs(File::open(&tmp.path)?)?;
        match fs::rename(&tmp.path, &dest) {
            Ok(()) => {
                tmp.keep = true;
                File::open(dir)?.sync_all()
            }
            Err(e) if dest.is_dir() => {
                tracing::debug!(layer = %diff_id, error = %e, "layer already in the store");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Add `record` (or merge it into the existing record of the same
    /// ID) and give it `names`, taking them from other images. An image
    /// left without any name is deleted. Returns the stored record.
    pub fn commit(&self, record: ImageRecord, names: &[Reference]) -> io::Result<ImageRecord> {
        let lock = self.lock_records()?;
        let mut records = self.records()?;
        let seq = records.iter().map(|r| r.seq).max().unwrap_or(0) + 1;
        let mut all: Vec<ImageNames> = records.iter().map(ImageRecord::names).collect();
        let mut changed: HashSet<usize> = HashSet::new();
        for name in names {
            changed.extend(rules::assign_name(&mut all, &record.id, name));
        }
        let target = all
            .iter()
            .position(|n| n.id == record.id)
            .unwrap_or(all.len());
        if target == records.len() {
            records.push(ImageRecord {
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
                ..record.clone()
            });
            if all.len() == target {
                all.push(record.names());
            }
        } else {
            // Same content again: keep names, refresh what we learned.
            let existing = &mut records[target];
            let (tags, digests) = (existing.repo_tags.clone(), existing.repo_digests.clone());
            *existing = ImageRecord {
                repo_tags: tags,
                repo_digests: digests,
                ..record.clone()
            };
        }
        // The image being named first: a crash in between leaves a name on
        // two records, and the higher seq wins it.
        let mut stored = records[target].clone();
        stored.repo_tags = all[target].repo_tags.clone();
        stored.repo_digests = all[target].repo_digests.clone();
        stored.seq = seq;
        lock.write(&stored)?;
        for idx in changed {
            if idx == target || idx >= records.len() {
                continue;
            }
            let mut r = records[idx].clone();
            r.repo_tags = all[idx].repo_tags.clone();
            r.repo_digests = all[idx].repo_digests.clone();
            if rules::is_unnamed(&all[idx]) {
                tracing::info!(image = %r.id, "image lost its last name; deleting it");
                lock.delete(&r.id)?;
            } else {
                lock.write(&r)?;
            }
        }
        drop(lock);
        self.refresh_names();
        Ok(stored)
    }

    /// Remove the record of the image `query` names, with every tag and
    /// digest it has (see `rules::plan_removal`). `in_use` may veto
    /// deleting an image a container needs.
    pub fn remove(
        &self,
        query: &str,
        in_use: &dyn Fn(&ImageRecord) -> Option<String>,
    ) -> io::Result<Removal> {
        let lock = self.lock_records()?;
        let records = self.records()?;
        let names: Vec<ImageNames> = records.iter().map(ImageRecord::names).collect();
        match rules::plan_removal(&names, query) {
            rules::Removal::NotFound => Ok(Removal::NotFound),
            rules::Removal::Delete { image } => {
                let record = &records[image];
                if let Some(user) = in_use(record) {
                    return Ok(Removal::InUse(user));
                }
                lock.delete(&record.id)?;
                drop(lock);
                self.refresh_names();
                Ok(Removal::Removed(Box::new(record.clone())))
            }
        }
    }

    /// Delete content no record references, and leftovers of interrupted
    /// pulls. Does nothing (returns `None`) while a pull or import runs.
    pub fn gc(&self) -> io::Result<Option<GcStats>> {
        let _records = self.lock_records()?;
        let Some(_users) = self.lock_file("users.lock", FlockArg::LockExclusiveNonblock)? else {
            return Ok(None);
        };
        let records = self.records()?;
        let mut blobs = HashSet::new();
        let mut layers = HashSet::new();
        for r in &records {
            blobs.insert(r.id.clone());
            blobs.extend(r.manifest_digest.clone());
            blobs.extend(r.index_digest.clone());
            for l in &r.layers {
                layers.insert(l.diff_id.clone());
            }
        }
        let mut stats = GcStats {
            blobs: sweep(&self.root.join("blobs"), &blobs)?,
            layers: sweep(&self.root.join("layers"), &layers)?,
            temps: 0,
        };
        for entry in fs::read_dir(self.root.join("tmp"))? {
            let entry = entry?;
            remove_any(&entry.path())?;
            stats.temps += 1;
        }
        // Temporary files of record writes cut short by a crash.
        for entry in fs::read_dir(self.root.join("records"))? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                remove_any(&entry.path())?;
                stats.temps += 1;
            }
        }
        // Records of images with no name left (e.g. a crash between
        // naming two images).
        for entry in fs::read_dir(self.root.join("records"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_suffix(".json") {
                if !records.iter().any(|r| r.id.ends_with(hex)) {
                    remove_any(&entry.path())?;
                }
            }
        }
        if stats != GcStats::default() {
            tracing::info!(
                blobs = stats.blobs,
                layers = stats.layers,
                temporaries = stats.temps,
                "image store garbage collected"
            );
        }
        Ok(Some(stats))
    }

    /// Bytes (allocated blocks) and inodes the store uses; hard links
    /// count once. Unpacked layers never change once in place, so each is
    /// measured once and remembered: kubelet asks every few seconds.
    pub fn usage(&self) -> io::Result<(u64, u64)> {
        let (mut bytes, mut inodes) = (0u64, 0u64);
        let layers = self.root.join("layers");
        let mut live = HashSet::new();
        for alg in fs::read_dir(&layers)? {
            let alg = alg?;
            let (b, i) = measure(&alg.path(), false)?;
            bytes += b;
            inodes += i + 1;
            for layer in fs::read_dir(alg.path())? {
                let layer = layer?;
                let key = layer.path();
                let cached = self
                    .usage_cache
                    .lock()
                    .ok()
                    .and_then(|c| c.get(&key).copied());
                let (b, i) = match cached {
                    Some(v) => v,
                    None => {
                        let v = measure(&key, true)?;
                        if let Ok(mut c) = self.usage_cache.lock() {
                            c.insert(key.clone(), v);
                        }
                        v
                    }
                };
                bytes += b;
                inodes += i;
                live.insert(key);
            }
        }
        if let Ok(mut c) = self.usage_cache.lock() {
            c.retain(|k, _| live.contains(k));
        }
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            if entry.path() == layers {
                let m = entry.metadata()?;
                bytes += m.blocks() * 512;
                inodes += 1;
                continue;
            }
            let (b, i) = measure(&entry.path(), true)?;
            bytes += b;
            inodes += i;
        }
        Ok((bytes, inodes))
    }
}

/// Allocated bytes and inodes of `path` (itself included when `whole`)
/// and everything below it; hard links count once.
fn measure(path: &Path, whole: bool) -> io::Result<(u64, u64)> {
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let top = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    if whole {
        bytes += top.blocks() * 512;
        inodes += 1;
    }
    if !top.is_dir() {
        return Ok((bytes, inodes));
    }
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let m = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            bytes += m.blocks() * 512;
            inodes += 1;
            if m.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok((bytes, inodes))
}

impl RecordsLock<'_> {
    pub fn write(&self, record: &ImageRecord) -> io::Result<()> {
        let data = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        persist::write_atomic(&self.store.record_path(&record.id), &data)
    }

    pub fn delete(&self, id: &str) -> io::Result<()> {
        let path = self.store.record_path(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        File::open(self.store.root.join("records"))?.sync_all()
    }
}

/// Remove `<dir>/<alg>/<hex>` entries whose `alg:hex` is not in `keep`.
fn sweep(dir: &Path, keep: &HashSet<String>) -> io::Result<usize> {
    let mut removed = 0;
    for alg in fs::read_dir(dir)? {
        let alg = alg?;
        if !alg.file_type()?.is_dir() {
            continue;
        }
        let alg_name = alg.file_name().to_string_lossy().into_owned();
        for entry in fs::read_dir(alg.path())? {
            let entry = entry?;
            let digest = format!("{alg_name}:{}", entry.file_name().to_string_lossy());
            if !keep.contains(&digest) {
                remove_any(&entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => unpack::remove_tree(path),
        Ok(_) => match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crisp_core::cri::reference::Algorithm;

    fn scratch(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("crisp-store-{tag}-{}", std::process::id()));
        let _ = unpack::remove_tree(&p);
        p
    }

    fn digest(data: &[u8]) -> Digest {
        super::super::oci::digest_of(Algorithm::Sha256, data)
    }

    fn record(id: &Digest, layer: &Digest) -> ImageRecord {
        ImageRecord {
            id: id.to_string(),
            size: 10,
            layers: vec![LayerRecord {
                digest: layer.to_string(),
                diff_id: layer.to_string(),
                size: 10,
                media_type: String::new(),
            }],
            ..ImageRecord::default()
        }
    }

    #[test]
    fn names_move_and_gc_collects() {
        let root = scratch("gc");
        let store = Store::open(&root).unwrap();
        let (c1, c2, l1, l2) = (digest(b"c1"), digest(b"c2"), digest(b"l1"), digest(b"l2"));
        store.put_blob(&c1, b"c1").unwrap();
        store.put_blob(&c2, b"c2").unwrap();
        for l in [&l1, &l2] {
            let t = store.temp_dir("layer").unwrap();
            fs::write(t.path().join("f"), b"x").unwrap();
            store.commit_layer(t, l).unwrap();
        }
        let tag = Reference::parse_normalized("app:1").unwrap();
        let other = Reference::parse_normalized("app:2").unwrap();
        store
            .commit(record(&c1, &l1), &[tag.clone(), other.clone()])
            .unwrap();
        store
            .commit(record(&c2, &l2), std::slice::from_ref(&tag))
            .unwrap();
        let recs = store.records().unwrap();
        assert_eq!(recs.len(), 2);
        let r1 = recs.iter().find(|r| r.id == c1.to_string()).unwrap();
        assert_eq!(r1.repo_tags, vec!["docker.io/library/app:2".to_string()]);
        // Moving the last name away deletes the image.
        store.commit(record(&c2, &l2), &[other]).unwrap();
        let recs = store.records().unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].repo_tags.len(), 2);
        // A leftover temp dir and the orphaned content go.
        fs::create_dir(root.join("tmp/layer-crashed")).unwrap();
        let stats = store.gc().unwrap().unwrap();
        assert_eq!(
            stats,
            GcStats {
                blobs: 1,
                layers: 1,
                temps: 1
            }
        );
        assert!(store.has_layer(&l2));
        assert!(!store.has_layer(&l1));
        // One of its tags removes the image with both.
        let none = |_: &ImageRecord| None;
        let Removal::Removed(r) = store.remove("app:1", &none).unwrap() else {
            panic!("app:1 not removed");
        };
        assert_eq!(r.id, c2.to_string());
        assert!(matches!(
            store.remove("app:2", &none).unwrap(),
            Removal::NotFound
        ));
        assert!(store.records().unwrap().is_empty());
        store.gc().unwrap().unwrap();
        assert!(!store.has_layer(&l2));
        assert!(!store.blob_path(&c2).exists());
        unpack::remove_tree(&root).unwrap();
    }

    #[test]
    fn gc_waits_for_users_and_in_use_vetoes() {
        let root = scratch("users");
        let store = Store::open(&root).unwrap();
        let (c, l) = (digest(b"c"), digest(b"l"));
        store.put_blob(&c, b"c").unwrap();
        let user = store.user().unwrap();
        assert_eq!(store.gc().unwrap(), None);
        drop(user);
        assert!(store.gc().unwrap().is_some());
        let tag = Reference::parse_normalized("x").unwrap();
        store.commit(record(&c, &l), &[tag]).unwrap();
        let veto = |_: &ImageRecord| Some("container abc".to_string());
        assert!(
            matches!(store.remove("x", &veto).unwrap(), Removal::InUse(u) if u == "container abc")
        );
        assert_eq!(store.records().unwrap().len(), 1);
        let (bytes, inodes) = store.usage().unwrap();
        assert!(bytes > 0 && inodes > 0);
        unpack::remove_tree(&root).unwrap();
    }

    #[test]
    fn contested_names_go_to_the_later_record() {
        let root = scratch("contested");
        let store = Store::open(&root).unwrap();
        let lock = store.lock_records().unwrap();
        let (c1, c2, l) = (digest(b"1"), digest(b"2"), digest(b"l"));
        let mut a = record(&c1, &l);
        a.repo_tags = vec![
            "docker.io/library/x:latest".into(),
            "docker.io/library/x:old".into(),
        ];
        a.seq = 1;
        let mut b = record(&c2, &l);
        b.repo_tags = vec!["docker.io/library/x:latest".into()];
        b.seq = 2;
        lock.write(&a).unwrap();
        lock.write(&b).unwrap();
        drop(lock);
        let recs = store.records().unwrap();
        let a2 = recs.iter().find(|r| r.id == a.id).unwrap();
        assert_eq!(a2.repo_tags, vec!["docker.io/library/x:old".to_string()]);
        unpack::remove_tree(&root).unwrap();
    }
}
