//! Store behaviour: limits and eviction order, persistence, locking, corruption,
//! permissions, and readers running during writes.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ghmesh_protocol::{CanonicalRequest, Entry};
use ghmesh_store::{Limits, Store, StoreError};

const NOW: u64 = 1_800_000_000_000;

fn entry(i: usize, body_len: usize, fresh_until: u64) -> Entry {
    Entry::new(
        CanonicalRequest::get(&format!("/repos/o/r/issues/{i}")).unwrap(),
        vec![("etag".into(), format!("\"{i}\""))],
        vec![(i % 251) as u8; body_len],
        None,
        NOW - 1000,
        fresh_until,
        "me".into(),
    )
}

fn key(i: usize) -> ghmesh_protocol::CacheKey {
    CanonicalRequest::get(&format!("/repos/o/r/issues/{i}"))
        .unwrap()
        .key()
}

fn open(dir: &tempfile::TempDir, limits: Limits) -> Store {
    Store::open(dir.path().join("cache.redb"), limits).unwrap()
}

#[test]
fn put_get_replace_remove() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, Limits::default());
    assert!(s.get(&key(1)).unwrap().is_none());
    let e = entry(1, 100, NOW + 60_000);
    s.put(&e, NOW).unwrap();
    assert_eq!(s.get(&key(1)).unwrap(), Some(e.clone()));
    assert_eq!(s.get_meta(&key(1)).unwrap(), Some(e.meta.clone()));
    assert_eq!(s.len(), 1);
    let bytes_one = s.bytes();
    assert!(bytes_one > 100);

    let mut newer = entry(1, 200, NOW + 120_000);
    newer.meta.origin = "peer".into();
    s.put(&newer, NOW).unwrap();
    assert_eq!(s.len(), 1, "same key replaces");
    assert_eq!(s.get(&key(1)).unwrap().unwrap().body.len(), 200);
    assert!(s.bytes() > bytes_one);

    assert!(s.set_freshness(&key(1), NOW + 5, NOW + 999_000).unwrap());
    let m = s.get_meta(&key(1)).unwrap().unwrap();
    assert_eq!(m.fresh_until_ms, NOW + 999_000);
    assert_eq!(
        s.get(&key(1)).unwrap().unwrap().body.len(),
        200,
        "body untouched"
    );
    assert!(!s.set_freshness(&key(2), NOW, NOW).unwrap());

    assert!(s.remove(&key(1)).unwrap());
    assert!(!s.remove(&key(1)).unwrap());
    assert_eq!((s.len(), s.bytes()), (0, 0));
}

#[test]
fn entry_limit_evicts_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(
        &dir,
        Limits {
            max_entries: 3,
            max_bytes: u64::MAX,
        },
    );
    for i in 0..3 {
        s.put(&entry(i, 10, NOW + 60_000), NOW).unwrap();
    }
    // Use 0, so 1 becomes the least recently used.
    s.get(&key(0)).unwrap();
    let stats = s.put(&entry(3, 10, NOW + 60_000), NOW).unwrap();
    assert_eq!(stats.evicted, 1);
    assert!(s.get_meta(&key(1)).unwrap().is_none(), "LRU entry evicted");
    for i in [0, 2, 3] {
        assert!(s.get_meta(&key(i)).unwrap().is_some(), "entry {i} kept");
    }
    assert_eq!(s.len(), 3);
}

#[test]
fn expired_entries_go_before_fresh_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(
        &dir,
        Limits {
            max_entries: 3,
            max_bytes: u64::MAX,
        },
    );
    s.put(&entry(0, 10, NOW + 60_000), NOW).unwrap(); // oldest use, fresh
    s.put(&entry(1, 10, NOW - 10), NOW).unwrap(); // expired
    s.put(&entry(2, 10, NOW + 60_000), NOW).unwrap();
    // Expired entries are kept while there is room (stale serving).
    assert!(s.get_meta(&key(1)).unwrap().is_some());
    s.put(&entry(3, 10, NOW + 60_000), NOW).unwrap();
    assert!(
        s.get_meta(&key(1)).unwrap().is_none(),
        "expired entry evicted first"
    );
    assert!(
        s.get_meta(&key(0)).unwrap().is_some(),
        "fresh LRU entry kept"
    );
}

#[test]
fn byte_limit_is_respected() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(
        &dir,
        Limits {
            max_entries: 1000,
            max_bytes: 10_000,
        },
    );
    for i in 0..20 {
        s.put(&entry(i, 1000, NOW + 60_000), NOW).unwrap();
        assert!(s.bytes() <= 10_000, "bytes {} over limit", s.bytes());
    }
    assert!(s.len() < 10);
    // The newest survive, the oldest went.
    assert!(s.get_meta(&key(19)).unwrap().is_some());
    assert!(s.get_meta(&key(0)).unwrap().is_none());
    // An entry larger than the whole budget evicts everything, itself included.
    s.put(&entry(99, 20_000, NOW + 60_000), NOW).unwrap();
    assert!(s.bytes() <= 10_000);
}

#[test]
fn put_many_and_iteration() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, Limits::default());
    let batch: Vec<Entry> = (0..500).map(|i| entry(i, 64, NOW + 60_000)).collect();
    let stats = s.put_many(&batch, NOW).unwrap();
    assert_eq!(stats.written, 500);
    assert_eq!(s.len(), 500);
    let mut seen = 0;
    s.for_each_meta(|k, m| {
        assert_eq!(k, m.key());
        seen += 1;
        true
    })
    .unwrap();
    assert_eq!(seen, 500);
    assert_eq!(s.keys_by_recency().unwrap().len(), 500);
}

#[test]
fn reopening_keeps_everything_committed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(&dir, Limits::default());
        s.put_many(
            &(0..50)
                .map(|i| entry(i, 32, NOW + 60_000))
                .collect::<Vec<_>>(),
            NOW,
        )
        .unwrap();
        s.get(&key(7)).unwrap();
        s.flush().unwrap();
    }
    let s = open(&dir, Limits::default());
    assert_eq!(s.len(), 50);
    for i in 0..50 {
        assert_eq!(s.get(&key(i)).unwrap(), Some(entry(i, 32, NOW + 60_000)));
    }
    assert_eq!(
        s.keys_by_recency().unwrap().last(),
        Some(&key(7)),
        "recency persisted"
    );
}

#[test]
fn second_opener_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(&dir, Limits::default());
    let err = Store::open(dir.path().join("cache.redb"), Limits::default()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("another ghmesh node"), "{err}");
}

#[test]
fn corrupt_file_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = Store::open(&path, Limits::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("move it aside"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "never wiped");
}

#[test]
fn damaged_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    {
        let s = Store::open(&path, Limits::default()).unwrap();
        s.put_many(
            &(0..200)
                .map(|i| entry(i, 512, NOW + 60_000))
                .collect::<Vec<_>>(),
            NOW,
        )
        .unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    for b in &mut bytes[len / 3..len / 3 + 4096] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    match Store::open(&path, Limits::default()) {
        Err(StoreError::Corrupt { .. }) => {}
        Ok(s) => {
            // The flipped range may have hit free pages only; then every entry must read back.
            for i in 0..200 {
                assert_eq!(s.get(&key(i)).unwrap(), Some(entry(i, 512, NOW + 60_000)));
            }
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/cache.redb");
    let _s = Store::open(&path, Limits::default()).unwrap();
    let file_mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(file_mode, 0o600);
    assert_eq!(dir_mode, 0o700);
}

#[test]
fn readers_run_during_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(&dir, Limits::default()));
    s.put_many(
        &(0..100)
            .map(|i| entry(i, 256, NOW + 60_000))
            .collect::<Vec<_>>(),
        NOW,
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let i = (reads as usize * 7 + r) % 100;
                    let got = s.get(&key(i)).unwrap().expect("pre-written entry visible");
                    assert!(got.meta.body_matches(&got.body), "torn read");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for round in 0..20 {
        let batch: Vec<Entry> = (0..100)
            .map(|i| entry(i, 256 + round, NOW + 60_000))
            .collect();
        s.put_many(&batch, NOW).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let total: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(total > 0);
    assert_eq!(s.len(), 100);
}
