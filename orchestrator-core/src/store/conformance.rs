//! The conformance suite every artifact store must pass: built-ins, S3, GCS and third-party
//! plugins alike (feature `conformance`). In a plugin crate's own tests, open the built library
//! with
//! [`open_built_plugin`] and call [`run_all`] (`cargo build` first: `cargo test` does not build
//! `cdylib`s):
//!
//! ```no_run
//! #[test]
//! fn passes_the_conformance_suite() {
//!     let settings = orchestrator_core::sdk::serde_json::json!({ "root": "/tmp/my-store-test" });
//!     let store = orchestrator_core::store::conformance::open_built_plugin("my-store", settings);
//!     orchestrator_core::store::conformance::run_all(&store);
//! }
//! ```
//!
//! Every check works under its own random prefix and deletes what it wrote, so the suite can
//! run against a shared bucket. Checks panic with a message naming the broken rule.

use std::io::Write;

use super::Store;
use crate::ErrorKind;
use crate::host::{PluginModule, library_file_name};
use crate::sdk::PluginConfig;

/// Opens the artifact-store plugin built from package `package` (the `lib<package>.so` in the
/// target directory of the running test, e.g. `target/debug`), exactly as ferry loads it, with
/// `settings`. Panics with what to do when the library is missing or refuses to load.
pub fn open_built_plugin(package: &str, settings: serde_json::Value) -> Store {
    let exe = std::env::current_exe().expect("the test binary's path");
    // Tests run from target/<profile>/deps/<test>; the library sits in target/<profile>.
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("tests run from target/<profile>/deps");
    let file = dir.join(library_file_name(package));
    assert!(
        file.is_file(),
        "{} is missing: run `cargo build` (same profile) before `cargo test`; cargo does not build cdylib plugins for tests",
        file.display()
    );
    let module = PluginModule::open(&file)
        .unwrap_or_else(|e| panic!("{} does not load as a plugin: {e:?}", file.display()));
    let root = std::env::current_dir().expect("the working directory");
    let config = PluginConfig::new(settings.as_object().cloned().unwrap_or_default())
        .with_project_root(root);
    module
        .new_store(&config)
        .unwrap_or_else(|e| panic!("{} does not open as a store: {e}", file.display()))
}

/// Run every check in turn.
pub fn run_all(store: &Store) {
    bytes_round_trip(store);
    missing_keys(store);
    files_round_trip(store, 3 * 1024);
    files_round_trip(store, 20 * 1024 * 1024 + 17);
    listing(store);
    deleting(store);
    hostile_keys(store);
    unusual_names(store);
    concurrent_writers(store);
    url_has_no_secrets(store);
}

fn scratch_prefix(check: &str) -> String {
    format!("conformance/{}-{check}", crate::run::new_run_id())
}

fn cleanup(store: &Store, prefix: &str) {
    let listing = store
        .list(prefix, true)
        .unwrap_or_else(|e| panic!("listing {prefix} for cleanup failed: {e}"));
    for object in listing.objects {
        store.delete(&object.key).unwrap();
    }
}

/// Small blobs round-trip; `head` reports the size; overwriting replaces the whole object.
pub fn bytes_round_trip(store: &Store) {
    let prefix = scratch_prefix("bytes");
    let key = format!("{prefix}/blob.json");
    let info = store.put_bytes(&key, b"{\"hello\": 1}").unwrap();
    assert_eq!(info.size, 12, "put_bytes must report the stored size");
    assert_eq!(info.key, key, "put_bytes must report the key it was given");
    assert_eq!(store.get_bytes(&key).unwrap(), b"{\"hello\": 1}");
    let head = store
        .head(&key)
        .unwrap()
        .expect("head finds a stored object");
    assert_eq!(head.size, 12);
    assert_eq!(head.key, key, "head must report keys relative to the store");
    store.put_bytes(&key, b"short").unwrap();
    assert_eq!(
        store.get_bytes(&key).unwrap(),
        b"short",
        "overwrite replaces all"
    );
    store.put_bytes(&format!("{prefix}/empty"), b"").unwrap();
    assert_eq!(store.get_bytes(&format!("{prefix}/empty")).unwrap(), b"");
    cleanup(store, &prefix);
}

/// Missing keys are `NOT_FOUND` errors (or `None` from `head`), and a failed download leaves
/// no file behind.
pub fn missing_keys(store: &Store) {
    let prefix = scratch_prefix("missing");
    let key = format!("{prefix}/nothing-here");
    let err = store.get_bytes(&key).unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::NOT_FOUND,
        "get_bytes of a missing key: {err}"
    );
    assert!(store.head(&key).unwrap().is_none(), "head of a missing key");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let err = store.get_file(&key, &dest).unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::NOT_FOUND,
        "get_file of a missing key: {err}"
    );
    assert!(
        !dest.exists(),
        "a failed download must not create the destination"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a failed download must not leave temporary files"
    );
}

/// Files of `size` bytes round-trip through `put_file`/`get_file` unchanged, replacing an
/// existing destination.
pub fn files_round_trip(store: &Store, size: usize) {
    let prefix = scratch_prefix("files");
    let key = format!("{prefix}/data.bin");
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.bin");
    let content: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::File::create(&source)
        .unwrap()
        .write_all(&content)
        .unwrap();
    let info = store.put_file(&key, &source).unwrap();
    assert_eq!(
        info.size, size as u64,
        "put_file must report the uploaded size"
    );
    let dest = dir.path().join("nested/dest.bin");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, b"old content that must be replaced entirely").unwrap();
    let info = store.get_file(&key, &dest).unwrap();
    assert_eq!(info.size, size as u64);
    let read = std::fs::read(&dest).unwrap();
    assert!(
        read == content,
        "downloaded file differs from the uploaded one ({size} bytes)"
    );
    let missing_source = store
        .put_file(&key, &dir.path().join("absent"))
        .unwrap_err();
    assert_eq!(
        missing_source.kind,
        ErrorKind::NOT_FOUND,
        "{missing_source}"
    );
    cleanup(store, &prefix);
}

/// Recursive listings return every object below a prefix; level listings return direct
/// objects and sub-prefixes; keys are relative to the store.
pub fn listing(store: &Store) {
    let prefix = scratch_prefix("list");
    for key in ["a.txt", "sub/b.txt", "sub/deeper/c.txt", "other/d.txt"] {
        store
            .put_bytes(&format!("{prefix}/{key}"), key.as_bytes())
            .unwrap();
    }
    let all = store.list(&format!("{prefix}/"), true).unwrap();
    let keys: Vec<_> = all.objects.iter().map(|o| o.key.as_str()).collect();
    let expected: Vec<String> = ["a.txt", "other/d.txt", "sub/b.txt", "sub/deeper/c.txt"]
        .iter()
        .map(|k| format!("{prefix}/{k}"))
        .collect();
    assert_eq!(keys, expected, "recursive listing, sorted by key");
    let level = store.list(&prefix, false).unwrap();
    let keys: Vec<_> = level.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, [format!("{prefix}/a.txt")], "objects one level down");
    assert_eq!(
        level.prefixes,
        [format!("{prefix}/other"), format!("{prefix}/sub")],
        "sub-prefixes one level down, without trailing slash"
    );
    let sizes: Vec<u64> = all.objects.iter().map(|o| o.size).collect();
    assert_eq!(sizes, [5, 11, 9, 16], "listings carry sizes");
    let empty = store.list(&format!("{prefix}/none"), true).unwrap();
    assert!(
        empty.objects.is_empty(),
        "listing an unused prefix is empty, not an error"
    );
    // A prefix is a directory, not a string prefix: `sub` must not match `subway`.
    store
        .put_bytes(&format!("{prefix}/subway.txt"), b"x")
        .unwrap();
    let sub = store.list(&format!("{prefix}/sub"), true).unwrap();
    assert_eq!(
        sub.objects.len(),
        2,
        "listing `sub` must not include `subway.txt`"
    );
    cleanup(store, &prefix);
}

/// Deleted objects are gone; deleting a missing key succeeds.
pub fn deleting(store: &Store) {
    let prefix = scratch_prefix("delete");
    let key = format!("{prefix}/gone");
    store.put_bytes(&key, b"x").unwrap();
    store.delete(&key).unwrap();
    assert!(
        store.head(&key).unwrap().is_none(),
        "deleted object still visible"
    );
    store.delete(&key).unwrap();
    assert!(
        store.list(&prefix, true).unwrap().objects.is_empty(),
        "nothing left after delete"
    );
}

/// Keys that could escape the store are refused before anything is written.
pub fn hostile_keys(store: &Store) {
    for key in ["../escape", "/absolute", "a/../../b", "a//b", "", "dir/"] {
        let err = store
            .put_bytes(key, b"x")
            .expect_err(&format!("key {key:?} must be refused"));
        assert_eq!(err.kind, ErrorKind::INVALID_INPUT, "{key:?}: {err}");
    }
}

/// Spaces and non-ASCII characters in keys work and list back unchanged.
pub fn unusual_names(store: &Store) {
    let prefix = scratch_prefix("names");
    let key = format!("{prefix}/with space/ünïcödé €.txt");
    store.put_bytes(&key, b"ok").unwrap();
    assert_eq!(store.get_bytes(&key).unwrap(), b"ok");
    let listed = store.list(&prefix, true).unwrap();
    assert_eq!(
        listed.objects[0].key, key,
        "listing returns the key as written"
    );
    cleanup(store, &prefix);
}

/// Writers on several threads at once all land, none lost or mixed.
pub fn concurrent_writers(store: &Store) {
    let prefix = scratch_prefix("concurrent");
    std::thread::scope(|scope| {
        for thread in 0..8 {
            let store = store.clone();
            let prefix = &prefix;
            scope.spawn(move || {
                for i in 0..8 {
                    let body = format!("{thread}-{i}");
                    store
                        .put_bytes(&format!("{prefix}/{thread}/{i}"), body.as_bytes())
                        .unwrap();
                }
            });
        }
    });
    let listed = store.list(&prefix, true).unwrap();
    assert_eq!(listed.objects.len(), 64, "every concurrent write must land");
    for object in &listed.objects {
        let body = String::from_utf8(store.get_bytes(&object.key).unwrap()).unwrap();
        let expected = object.key.rsplitn(3, '/').take(2).collect::<Vec<_>>();
        assert_eq!(
            body,
            format!("{}-{}", expected[1], expected[0]),
            "mixed content"
        );
    }
    cleanup(store, &prefix);
}

/// The URL describes the store without credentials.
pub fn url_has_no_secrets(store: &Store) {
    let url = store.url();
    assert!(!url.is_empty(), "a store must describe its URL");
    assert!(
        !url.contains('@') || !url.contains(':'),
        "the store URL must not embed credentials: {url}"
    );
}
