//! The bounded profile store behind `/profiles/`.
//!
//! Names are made here, never taken from a request: a download looks the requested name up in
//! the store's own index, and only an indexed entry is ever read. A directory store opens
//! `directory/<indexed name>`, never a path built from what the client sent.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;

use super::capture::{rfc3339, Profile, ProfileType};
use super::metrics::metrics;

/// Profiles kept by default: the newest 64 files (32 captures, each stored both ways).
pub const DEFAULT_MAX_PROFILES: usize = 64;

/// Bytes kept by default: 32 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 32 << 20;

/// The URL prefix of downloads.
const URL_PREFIX: &str = "/profiles/";

/// What a stored profile file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileKind {
    /// A pprof protobuf (`go tool pprof`).
    Pprof,
    /// A flamegraph SVG (a browser).
    Flamegraph,
}

impl ProfileKind {
    /// The file extension of this kind.
    pub fn extension(self) -> &'static str {
        match self {
            ProfileKind::Pprof => "pb",
            ProfileKind::Flamegraph => "svg",
        }
    }

    /// The `Content-Type` a download of this kind is served with.
    pub fn content_type(self) -> &'static str {
        match self {
            ProfileKind::Pprof => "application/octet-stream",
            ProfileKind::Flamegraph => "image/svg+xml",
        }
    }
}

/// One stored profile, as `/profiles/` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileInfo {
    /// The file name, made by the store: `checkout-20261124T140305Z-0007.svg`.
    pub name: String,
    /// The capture's label (the `#[profiled]` name, `on_demand`, `heap` or `allocs`).
    pub function: String,
    /// What the profile measures: `cpu` or `heap`.
    pub profile_type: ProfileType,
    /// What the file holds.
    pub kind: ProfileKind,
    /// Its size in bytes.
    pub size: u64,
    /// When sampling started (RFC 3339, UTC).
    pub created: String,
    /// How long sampling ran.
    pub duration_seconds: f64,
    /// Samples kept.
    pub sample_count: u64,
    /// The sampling rate (0 for heap profiles).
    pub frequency_hz: u32,
    /// A heap profile's sampling interval, in bytes (left out for CPU captures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_interval_bytes: Option<u64>,
    /// Where to download it.
    pub download_url: String,
}

/// A profile read back from the store.
#[derive(Clone, Debug)]
pub struct ProfileData {
    /// What the store knows about it.
    pub info: ProfileInfo,
    /// Its content.
    pub bytes: Bytes,
}

impl ProfileData {
    /// The `Content-Type` to serve it with.
    pub fn content_type(&self) -> &'static str {
        self.info.kind.content_type()
    }

    /// The `Content-Disposition` to serve it with (names contain only `[A-Za-z0-9._-]`, so no
    /// quoting is needed beyond the quotes).
    pub fn content_disposition(&self) -> String {
        format!("attachment; filename=\"{}\"", self.info.name)
    }
}

/// Why a profile could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Not a name the store could have made (`..`, `/`, `%`, NUL, ...): answered 400.
    InvalidName,
    /// A well-formed name the store does not hold (never made, or dropped): answered 404.
    NotFound,
    /// The indexed file could not be read back.
    Io(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::InvalidName => f.write_str("not a profile name"),
            StoreError::NotFound => f.write_str("no such profile"),
            StoreError::Io(e) => write!(f, "could not read the profile: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Stored profiles, newest kept, bounded by count and bytes (the oldest are dropped first).
/// In memory by default (it then needs no writable filesystem), or in a directory. Cheap to
/// clone: clones share the store.
///
/// ```
/// use obskit::profile::{ProfileStore, StoreError};
///
/// let store = ProfileStore::in_memory(4, 1 << 20);
/// assert!(store.list().is_empty());
/// assert_eq!(store.get("../../etc/passwd").unwrap_err(), StoreError::InvalidName);
/// assert_eq!(store.get("checkout-20261124T140305Z-0001.svg").unwrap_err(), StoreError::NotFound);
/// ```
#[derive(Clone)]
pub struct ProfileStore {
    inner: Arc<Inner>,
}

struct Inner {
    max_count: usize,
    max_bytes: u64,
    directory: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Oldest first.
    entries: VecDeque<Entry>,
    bytes: u64,
    seq: u64,
}

struct Entry {
    info: ProfileInfo,
    content: Content,
}

enum Content {
    Memory(Bytes),
    /// In the store's directory, under `info.name`.
    File,
}

impl fmt::Debug for ProfileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileStore")
            .field("max_count", &self.inner.max_count)
            .field("max_bytes", &self.inner.max_bytes)
            .field("directory", &self.inner.directory)
            .field("bytes", &self.bytes())
            .finish()
    }
}

static GLOBAL: RwLock<Option<ProfileStore>> = RwLock::new(None);

impl ProfileStore {
    /// A store in memory keeping at most `max_count` files and `max_bytes` bytes.
    pub fn in_memory(max_count: usize, max_bytes: u64) -> Self {
        ProfileStore::build(max_count, max_bytes, None)
    }

    /// A store writing its files into `directory` (created if missing). Files already there are
    /// not adopted: the store serves only what it wrote itself, and deletes them as they age
    /// out. If a file cannot be written, that profile is kept in memory instead.
    pub fn in_directory(
        directory: impl AsRef<Path>,
        max_count: usize,
        max_bytes: u64,
    ) -> std::io::Result<Self> {
        let directory = directory.as_ref();
        std::fs::create_dir_all(directory)?;
        Ok(ProfileStore::build(
            max_count,
            max_bytes,
            Some(directory.canonicalize()?),
        ))
    }

    fn build(max_count: usize, max_bytes: u64, directory: Option<PathBuf>) -> Self {
        ProfileStore {
            inner: Arc::new(Inner {
                max_count: max_count.max(1),
                max_bytes,
                directory,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The process-wide store: where `#[profiled]` captures go and what the admin surface
    /// serves unless told otherwise. In memory with [`DEFAULT_MAX_PROFILES`] and
    /// [`DEFAULT_MAX_BYTES`] until [`ProfileStore::set_global`] replaces it.
    pub fn global() -> ProfileStore {
        if let Some(store) = GLOBAL.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return store.clone();
        }
        let mut global = GLOBAL.write().unwrap_or_else(|p| p.into_inner());
        global
            .get_or_insert_with(|| ProfileStore::in_memory(DEFAULT_MAX_PROFILES, DEFAULT_MAX_BYTES))
            .clone()
    }

    /// Makes `store` the process-wide store.
    ///
    /// ```
    /// use obskit::profile::ProfileStore;
    /// let dir = std::env::temp_dir().join(format!("obskit-doc-{}", std::process::id()));
    /// ProfileStore::set_global(ProfileStore::in_directory(&dir, 10, 1 << 20).unwrap());
    /// assert!(ProfileStore::global().list().is_empty());
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    pub fn set_global(store: ProfileStore) {
        metrics().store_bytes.set(store.bytes() as i64);
        *GLOBAL.write().unwrap_or_else(|p| p.into_inner()) = Some(store);
    }

    fn is_global(&self) -> bool {
        GLOBAL
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|g| Arc::ptr_eq(&g.inner, &self.inner))
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// The bounds: (files, bytes).
    pub fn limits(&self) -> (usize, u64) {
        (self.inner.max_count, self.inner.max_bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a profile both ways (pprof protobuf, then flamegraph) and returns the names
    /// given, dropping the oldest files to stay within bounds. A file larger than the whole
    /// byte bound is not stored.
    pub fn insert(&self, profile: &Profile) -> Vec<String> {
        let mut names = Vec::with_capacity(2);
        for (kind, bytes) in [
            (ProfileKind::Pprof, profile.pprof()),
            (ProfileKind::Flamegraph, profile.svg()),
        ] {
            if let Some(name) = self.insert_one(profile, kind, bytes.clone()) {
                names.push(name);
            }
        }
        names
    }

    fn insert_one(&self, profile: &Profile, kind: ProfileKind, bytes: Bytes) -> Option<String> {
        let size = bytes.len() as u64;
        if size > self.inner.max_bytes {
            return None;
        }
        let mut removed = Vec::new();
        let name = {
            let mut state = self.lock();
            state.seq += 1;
            let name = format!(
                "{}-{}-{:04}.{}",
                slug(profile.function()),
                compact_time(profile.started_at()),
                state.seq,
                kind.extension()
            );
            let content = match &self.inner.directory {
                Some(dir) => match write_new(&dir.join(&name), &bytes) {
                    Ok(()) => Content::File,
                    Err(_) => Content::Memory(bytes),
                },
                None => Content::Memory(bytes),
            };
            state.entries.push_back(Entry {
                info: ProfileInfo {
                    download_url: format!("{URL_PREFIX}{name}"),
                    name: name.clone(),
                    function: profile.function().to_string(),
                    profile_type: profile.profile_type(),
                    kind,
                    size,
                    created: rfc3339(profile.started_at()),
                    duration_seconds: profile.duration().as_secs_f64(),
                    sample_count: profile.samples(),
                    frequency_hz: profile.frequency(),
                    sample_interval_bytes: profile.sample_interval_bytes(),
                },
                content,
            });
            state.bytes += size;
            while state.entries.len() > self.inner.max_count || state.bytes > self.inner.max_bytes {
                let Some(old) = state.entries.pop_front() else {
                    break;
                };
                state.bytes -= old.info.size;
                if let Content::File = old.content {
                    removed.push(old.info.name);
                }
            }
            name
        };
        // Files are deleted outside the lock; their names came from the index.
        if let Some(dir) = &self.inner.directory {
            for old in removed {
                let _ = std::fs::remove_file(dir.join(old));
            }
        }
        if self.is_global() {
            metrics().store_bytes.set(self.bytes() as i64);
        }
        Some(name)
    }

    /// The stored profiles, newest first.
    pub fn list(&self) -> Vec<ProfileInfo> {
        self.lock().entries.iter().rev().map(|e| e.info.clone()).collect()
    }

    /// Reads one profile by name: [`StoreError::InvalidName`] for anything the store could not
    /// have named, [`StoreError::NotFound`] for a well-formed name it does not hold. Nothing
    /// outside the index is ever opened.
    pub fn get(&self, name: &str) -> Result<ProfileData, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::InvalidName);
        }
        let (info, content) = {
            let state = self.lock();
            let entry = state
                .entries
                .iter()
                .find(|e| e.info.name == name)
                .ok_or(StoreError::NotFound)?;
            let content = match &entry.content {
                Content::Memory(bytes) => Some(bytes.clone()),
                Content::File => None,
            };
            (entry.info.clone(), content)
        };
        let bytes = match (content, &self.inner.directory) {
            (Some(bytes), _) => bytes,
            // The path joins the store's directory with the name from its own index.
            (None, Some(dir)) => std::fs::read(dir.join(&info.name))
                .map(Bytes::from)
                .map_err(|e| StoreError::Io(e.to_string()))?,
            (None, None) => return Err(StoreError::NotFound),
        };
        Ok(ProfileData { info, bytes })
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    // `create_new`: never follow or overwrite something already there.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(bytes)
}

/// Whether `name` could have been made by [`ProfileStore::insert`]: 1 to 128 characters of
/// `[A-Za-z0-9_.-]`, not starting with a dot, without `..`. Checked before any lookup.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The function label as a file-name part: `[a-z0-9_]`, at most 48 characters.
fn slug(function: &str) -> String {
    let slug: String = function
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    if slug.trim_matches('_').is_empty() {
        "profile".to_string()
    } else {
        slug
    }
}

/// `20261124T140305Z`.
fn compact_time(t: SystemTime) -> String {
    rfc3339(t).replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(function: &str, size: usize) -> Profile {
        Profile::from_parts(function, &vec![1u8; size], &vec![b'<'; size])
    }

    #[test]
    fn names_are_generated_and_listed_newest_first() {
        let store = ProfileStore::in_memory(10, 1 << 20);
        let first = store.insert(&profile("Check Out/../x", 5));
        let second = store.insert(&profile("", 5));
        assert_eq!(first.len(), 2);
        assert!(first[0].starts_with("check_out____x-"), "{first:?}");
        assert!(first[0].ends_with("-0001.pb"));
        assert!(first[1].ends_with("-0002.svg"));
        assert!(second[0].starts_with("profile-"));
        for name in first.iter().chain(&second) {
            assert!(valid_name(name), "{name}");
        }
        let list = store.list();
        assert_eq!(list[0].name, second[1]);
        assert_eq!(list[3].name, first[0]);
        assert_eq!(list[3].download_url, format!("/profiles/{}", first[0]));
        let data = store.get(&first[1]).unwrap();
        assert_eq!(data.content_type(), "image/svg+xml");
        assert_eq!(
            data.content_disposition(),
            format!("attachment; filename=\"{}\"", first[1])
        );
        assert_eq!(data.bytes.len(), 5);
    }

    #[test]
    fn bounded_by_count_and_bytes() {
        let store = ProfileStore::in_memory(5, 1000);
        for _ in 0..50 {
            store.insert(&profile("f", 150));
            assert!(store.list().len() <= 5);
            assert!(store.bytes() <= 1000);
        }
        let list = store.list();
        assert_eq!(list.len(), 5);
        assert!(
            list[0].name.ends_with("-0100.svg"),
            "the newest is kept: {:?}",
            list[0].name
        );
        assert_eq!(store.bytes(), 750);
        // One file larger than the whole bound is not stored, and evicts nothing.
        assert!(store.insert(&profile("huge", 2000)).is_empty());
        assert_eq!(store.list().len(), 5);
    }

    #[test]
    fn invalid_names() {
        for name in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            "a\0b",
            "%2e%2e",
            ".hidden",
            "a..b",
            "a\\b",
        ] {
            assert!(!valid_name(name), "{name:?}");
        }
        assert!(valid_name("on_demand-20261124T140305Z-0001.pb"));
    }

    #[test]
    fn directory_store_deletes_what_ages_out_and_serves_only_its_index() {
        let dir = std::env::temp_dir().join(format!("obskit-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = ProfileStore::in_directory(&dir, 2, 1 << 20).unwrap();
        std::fs::write(dir.join("planted.svg"), "not ours").unwrap();
        let a = store.insert(&profile("a", 3));
        let b = store.insert(&profile("b", 3));
        assert!(!dir.join(&a[0]).exists(), "aged out and deleted");
        assert!(dir.join(&b[1]).exists());
        assert_eq!(store.get(&b[1]).unwrap().bytes.len(), 3);
        assert_eq!(store.get("planted.svg").unwrap_err(), StoreError::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
