//! Store costs. Run: `cargo bench -p ghmesh-store`.
//! `put` and `put_many` include an fsync per transaction, so they measure the disk.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ghmesh_protocol::{CanonicalRequest, Entry};
use ghmesh_store::{Limits, Store};

const NOW: u64 = 1_800_000_000_000;

fn entry(i: u64) -> Entry {
    Entry::new(
        CanonicalRequest::get(&format!("/repos/acme/widgets/issues/{i}")).unwrap(),
        vec![
            ("content-type".into(), "application/json".into()),
            ("etag".into(), format!("\"{i}\"")),
        ],
        vec![b'x'; 4096],
        None,
        NOW,
        NOW + 60_000,
        "bench".into(),
    )
}

fn store_bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // Limits above what the bench writes: evictions would remove the key that get_hit reads.
    let limits = Limits {
        max_entries: u64::MAX,
        max_bytes: u64::MAX,
    };
    let store = Store::open(dir.path().join("bench.redb"), limits).unwrap();
    let mut g = c.benchmark_group("store");
    let mut i = 0u64;
    g.bench_function("put_4KiB", |b| {
        b.iter(|| {
            i += 1;
            store.put(&entry(i), NOW).unwrap()
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.sample_size(10);
    let mut base = 1_000_000u64;
    g.bench_function("put_many_1000x4KiB", |b| {
        b.iter_batched(
            || {
                base += 1000;
                (base..base + 1000).map(entry).collect::<Vec<_>>()
            },
            |batch| store.put_many(&batch, NOW).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("store");
    let hit = entry(1).meta.key();
    let miss = CanonicalRequest::get("/nope").unwrap().key();
    g.bench_function("get_hit_4KiB", |b| {
        b.iter(|| store.get(&hit).unwrap().unwrap())
    });
    g.bench_function("get_miss", |b| b.iter(|| store.get(&miss).unwrap()));
    g.finish();
}

criterion_group!(benches, store_bench);
criterion_main!(benches);
