//! Tests of the writer: what a batch sees, and when background writes wait.

use super::*;
use ghmesh_protocol::CanonicalRequest;
use ghmesh_store::Limits;

fn entry(path: &str, body: &[u8], fetched: u64, fresh: u64) -> Entry {
    Entry::new(
        CanonicalRequest::get(path).unwrap(),
        vec![],
        body.to_vec(),
        None,
        fetched,
        fresh,
        "me".into(),
    )
}

fn refresh(e: &Entry, fetched: u64, fresh: u64) -> Refresh {
    Refresh {
        key: e.meta.key(),
        cid: e.meta.cid.clone(),
        fetched_at_ms: fetched,
        fresh_until_ms: fresh,
    }
}

#[test]
fn a_batch_sees_its_own_earlier_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("c.redb"), Limits::default()).unwrap();
    let a = entry("/a", b"1", 1_000, 2_000);
    let b_old = entry("/b", b"1", 1_000, 2_000);
    store.put(&b_old, 0).unwrap();
    let b_new = entry("/b", b"2", 1_500, 2_500);
    let jobs = vec![
        WriteJob::Put(a.clone()),
        // Refresh of a pending put: applied to the pending entry.
        WriteJob::Refresh(refresh(&a, 1_100, 3_000)),
        // Refresh of a held entry twice: the second sees the first.
        WriteJob::Refresh(refresh(&b_old, 1_100, 4_000)),
        WriteJob::Refresh(refresh(&b_old, 1_200, 3_500)),
        // An older version from a peer loses.
        WriteJob::Merge(entry("/a", b"0", 500, 9_000)),
        WriteJob::Flush,
    ];
    let changed = apply_batch(&store, jobs, 0, &|_| None).unwrap();
    assert_eq!(changed, vec![a.meta.key(), a.meta.key(), b_old.meta.key()]);
    let got_a = store.get_meta(&a.meta.key()).unwrap().unwrap();
    assert_eq!((got_a.fetched_at_ms, got_a.fresh_until_ms), (1_100, 3_000));
    assert_eq!(got_a.cid, a.meta.cid);
    let got_b = store.get_meta(&b_old.meta.key()).unwrap().unwrap();
    assert_eq!(got_b.fresh_until_ms, 4_000, "the shorter refresh lost");
    // A newer version from a peer replaces, and a refresh for the old one is ignored.
    let jobs = vec![
        WriteJob::Merge(b_new.clone()),
        WriteJob::Refresh(refresh(&b_old, 1_600, 9_000)),
    ];
    assert_eq!(
        apply_batch(&store, jobs, 0, &|_| None).unwrap(),
        vec![b_new.meta.key()]
    );
    let got_b = store.get(&b_new.meta.key()).unwrap().unwrap();
    assert_eq!(got_b.body.as_ref(), b"2");
    assert_eq!(got_b.meta.fresh_until_ms, 2_500);

    // An invalidation ends freshness; a later one past it changes nothing.
    let key = b_new.meta.key();
    let jobs = vec![
        WriteJob::Expire(vec![key], 2_000),
        WriteJob::Expire(vec![key], 2_100),
    ];
    assert_eq!(apply_batch(&store, jobs, 0, &|_| None).unwrap(), vec![key]);
    assert_eq!(store.get_meta(&key).unwrap().unwrap().fresh_until_ms, 2_000);

    // After a write to /b at 2_000, a peer's copy or refresh from before it is the
    // old answer: neither is taken.
    let written = |p: &str| (p == "/b").then_some(2_000);
    let old_copy = entry("/b", b"3", 1_900, 9_000);
    let jobs = vec![
        WriteJob::Merge(old_copy),
        WriteJob::Refresh(refresh(&b_new, 1_950, 9_000)),
    ];
    assert!(apply_batch(&store, jobs, 0, &written).unwrap().is_empty());
    let newer = entry("/b", b"4", 2_100, 9_000);
    let jobs = vec![WriteJob::Merge(newer)];
    assert_eq!(apply_batch(&store, jobs, 0, &written).unwrap(), vec![key]);
}

fn parts(store: Arc<Store>, signals: Arc<Signals>, counters: Counters) -> WriterParts {
    WriterParts {
        store,
        signals,
        counters,
        clock: crate::clock::system(),
        health: Arc::new(Health::default()),
        reopen_window: Duration::from_secs(1),
    }
}

fn signals() -> Arc<Signals> {
    Arc::new(Signals::new())
}

#[test]
fn only_background_writes_nobody_awaits_linger() {
    assert!(lingers(false, 1, false));
    assert!(!lingers(true, 1, false), "an urgent write in the batch");
    assert!(
        !lingers(false, 1, true),
        "a reader waits for one of the keys"
    );
    assert!(!lingers(false, MAX_WRITE_BATCH, false), "the batch is full");
    assert!(!lingers(false, 0, false), "nothing to wait with");
    let e = entry("/a", b"1", 1, 2);
    assert!(WriteJob::Merge(e.clone()).may_linger());
    assert!(WriteJob::Refresh(refresh(&e, 1, 3)).may_linger());
    assert!(!WriteJob::Put(e).may_linger());
    assert!(!WriteJob::Expire(vec![], 1).may_linger());
    assert!(!WriteJob::Flush.may_linger());

    // A reader that starts waiting for a key in the batch ends the wait.
    let sig = signals();
    let e = entry("/b", b"1", 1, 2);
    let mut batch = Gathered::default();
    let job = Box::new(WriteJob::Merge(e.clone()));
    assert!(!batch.add(WriterMsg::Job(job, None, Urgency::Background)));
    assert!(batch.may_linger(&sig));
    let _notify = sig.arrival(&e.meta.key());
    assert!(!batch.may_linger(&sig));
    assert!(batch.add(WriterMsg::Stop), "stop ends the batch");
}

#[tokio::test]
async fn background_writes_share_a_transaction_and_an_urgent_one_ends_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path().join("c.redb"), Limits::default()).unwrap());
    let counters = Counters::default();
    let signals = signals();
    let (writer, rx) = Writer::channel(64);
    writer.set_task(tokio::spawn(run(
        parts(store.clone(), signals.clone(), counters.clone()),
        rx,
    )));
    // Ten replicated entries, queued one by one as a prefetcher would, then a
    // reader's own write: one transaction for all eleven.
    let entries: Vec<Entry> = (0..10)
        .map(|i| entry(&format!("/r{i}"), b"x", 1, 9))
        .collect();
    for e in &entries {
        assert!(writer.write_behind(WriteJob::Merge(e.clone())));
    }
    let own = entry("/own", b"y", 1, 9);
    writer
        .write(WriteJob::Put(own.clone()), Urgency::Now)
        .await
        .unwrap();
    assert_eq!(counters.store_commits.get(), 1);
    for e in entries.iter().chain([&own]) {
        assert!(store.get_meta(&e.meta.key()).unwrap().is_some());
    }
    // A background write alone is committed once its wait is over, and answered.
    let late = entry("/late", b"z", 1, 9);
    writer
        .write(WriteJob::Merge(late.clone()), Urgency::Background)
        .await
        .unwrap();
    assert_eq!(counters.store_commits.get(), 2);
    assert!(store.get_meta(&late.meta.key()).unwrap().is_some());
    assert!(writer.stop(Duration::from_secs(5)).await);
}
