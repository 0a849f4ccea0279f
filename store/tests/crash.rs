//! Crash safety: a child process writes in a loop and acknowledges each committed
//! entry on stdout; the parent kills it with SIGKILL mid-stream and checks that every
//! acknowledged entry is there and the database opens.
//!
//! `harness = false`: the same binary is the parent and, re-executed, the child.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ghmesh_protocol::{CanonicalRequest, Entry};
use ghmesh_store::{Limits, Store};

const CHILD_ENV: &str = "GHMESH_STORE_CRASH_CHILD";
const NOW: u64 = 1_800_000_000_000;

fn entry(i: u64) -> Entry {
    Entry::new(
        CanonicalRequest::get(&format!("/crash/{i}")).unwrap(),
        vec![],
        format!("body-{i}-{}", "x".repeat((i % 97) as usize)).into_bytes(),
        None,
        NOW,
        NOW + 60_000,
        "child".into(),
    )
}

fn child(path: &str) {
    let store = Store::open(path, Limits::default()).expect("child opens store");
    let mut out = std::io::stdout().lock();
    let mut i = 0u64;
    loop {
        // Alternate single puts and small batches: both paths must be durable.
        if i.is_multiple_of(2) {
            store.put(&entry(i), NOW).expect("put");
            writeln!(out, "{i}").expect("ack");
            i += 1;
        } else {
            let batch: Vec<Entry> = (i..i + 5).map(entry).collect();
            store.put_many(&batch, NOW).expect("put_many");
            for j in i..i + 5 {
                writeln!(out, "{j}").expect("ack");
            }
            i += 5;
        }
        out.flush().expect("flush");
    }
}

fn main() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crash.redb");
    let mut total_acked = 0usize;
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .env(CHILD_ENV, &db)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut acked = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let target = 200 + round * 37;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read ack");
            acked.push(line.parse::<u64>().expect("ack number"));
            if acked.len() >= target || Instant::now() > deadline {
                break;
            }
        }
        // SIGKILL: no destructors, no flush.
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(
            acked.len() >= 50,
            "child acknowledged only {} entries",
            acked.len()
        );

        let store = Store::open(&db, Limits::default()).expect("database opens after SIGKILL");
        for i in &acked {
            let got = store.get(&entry(*i).meta.key()).expect("read");
            assert_eq!(got, Some(entry(*i)), "acknowledged entry {i} lost");
        }
        total_acked += acked.len();
        drop(store);
    }
    println!("crash: {total_acked} acknowledged entries survived 3 SIGKILLs");
    println!("1 passed, 0 failed");
}
