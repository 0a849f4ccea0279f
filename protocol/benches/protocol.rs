//! Key derivation and seal/open costs. Run: `cargo bench -p ghmesh-protocol`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ghmesh_protocol::*;

fn derive(c: &mut Criterion) {
    let mut g = c.benchmark_group("keys");
    g.sample_size(10);
    g.bench_function("derive_600k_rounds", |b| {
        b.iter(|| MeshKeys::derive(b"a stable fleet secret", "acme/widgets"))
    });
    g.finish();
}

fn seal_open(c: &mut Criterion) {
    let keys = MeshKeys::derive(b"a stable fleet secret", "acme/widgets");
    let limits = SealLimits {
        max_len: wire::MAX_RR_MESSAGE,
        max_age_secs: 300,
    };
    let mut g = c.benchmark_group("seal_open");
    for size in [1024usize, 16 * 1024, 256 * 1024] {
        let entry = Entry::new(
            CanonicalRequest::get("/repos/acme/widgets/issues?per_page=100").unwrap(),
            vec![("content-type".into(), "application/json".into())],
            vec![b'x'; size],
            None,
            1_800_000_000_000,
            1_800_000_060_000,
            "peer".into(),
        );
        let msg = Message::LookupReply(LookupReply::Found(Box::new(Announce {
            meta: entry.meta.clone(),
            body: Some(entry.body.clone()),
        })));
        let sealed = seal(&keys, &msg, 1_800_000_000);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("seal", size), &msg, |b, m| {
            b.iter(|| seal(&keys, m, 1_800_000_000))
        });
        g.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, s| {
            b.iter(|| open(&keys, s, limits, 1_800_000_000))
        });
        // What a member pulling an announced body gets.
        let reply = Message::BodyReply(BodyReply::Found(entry.body.clone()));
        let sealed = seal(&keys, &reply, 1_800_000_000);
        g.bench_with_input(BenchmarkId::new("seal_body_reply", size), &reply, |b, m| {
            b.iter(|| seal(&keys, m, 1_800_000_000))
        });
        g.bench_with_input(
            BenchmarkId::new("open_body_reply", size),
            &sealed,
            |b, s| b.iter(|| open(&keys, s, limits, 1_800_000_000)),
        );
    }
    g.finish();
}

criterion_group!(benches, derive, seal_open);
criterion_main!(benches);
