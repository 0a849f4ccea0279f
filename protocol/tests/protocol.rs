//! Known-answer vectors, property round trips and hostile input for the protocol.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use ghmesh_protocol::seal::seal_raw_for_tests;
use ghmesh_protocol::wire::{MAX_GOSSIP_MESSAGE, MESSAGE_VERSION};
use ghmesh_protocol::*;
use proptest::prelude::*;
use serde_bytes::ByteBuf;
use std::sync::OnceLock;

const NOW: u64 = 1_800_000_000;
const LIMITS: SealLimits = SealLimits {
    max_len: 1 << 20,
    max_age_secs: 300,
};

fn keys() -> &'static MeshKeys {
    static K: OnceLock<MeshKeys> = OnceLock::new();
    K.get_or_init(|| MeshKeys::derive(b"correct horse battery staple", "acme/widgets"))
}

fn other_keys() -> &'static MeshKeys {
    static K: OnceLock<MeshKeys> = OnceLock::new();
    K.get_or_init(|| MeshKeys::derive(b"correct horse battery staple", "acme/other"))
}

/// Vectors computed independently with Python's hashlib:
/// `pbkdf2_hmac('sha256', secret, b'ghmesh/v1/' + scope, 600000, 32)`, then
/// `sha256(label + b'\0' + master)` per subkey.
#[test]
fn key_derivation_known_answers() {
    let k = keys();
    assert_eq!(
        hex(k.fernet_key_for_tests()),
        "87a96d3a5b86caf4b6b55ab1e81ab232fa5de2d66db20a89908f80a920d78384"
    );
    assert_eq!(
        k.topic(),
        "ghmesh/1/157d1d6a5d5ac49069aa7c82c9c51740736a793552fa692b6c28ea0e8b1053c9"
    );
    assert_eq!(
        hex(k.rendezvous_key()),
        "653907ab36e5979f0d743ef47a27c3e8ac7949b116a8de8a9d8e5deffc9ec966"
    );
    assert_eq!(hex(k.key_id()), "76565c1339533b62");
    assert_eq!(
        MeshKeys::derive(b"s", "").topic(),
        "ghmesh/1/2dce3323329886d1d507296668933ee14936c514bfb24bac91297b2ec39d7daa"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sample_entry(body: Vec<u8>) -> Entry {
    Entry::new(
        CanonicalRequest::get("/repos/acme/widgets/actions/runs?status=queued").unwrap(),
        vec![
            ("content-type".into(), "application/json".into()),
            ("etag".into(), "W/\"1234\"".into()),
        ],
        body,
        Some(token_fingerprint("ghp_x")),
        NOW * 1000,
        NOW * 1000 + 60_000,
        "12D3KooWExample".into(),
    )
}

#[test]
fn every_bad_input_has_its_own_error() {
    let msg = Message::Announce(Announce::of(&sample_entry(b"[1,2,3]".to_vec())));
    let good = seal(keys(), &msg, NOW);
    assert_eq!(open(keys(), &good, LIMITS, NOW), Ok(msg.clone()));

    // Size is checked before anything else.
    let small = SealLimits {
        max_len: good.len() - 1,
        ..LIMITS
    };
    assert_eq!(open(keys(), &good, small, NOW), Err(OpenError::TooLarge));

    // Another scope's key.
    assert_eq!(
        open(other_keys(), &good, LIMITS, NOW),
        Err(OpenError::WrongKey)
    );

    // A flipped bit inside the token.
    let mut tampered = good.clone();
    let i = tampered.len() - 20;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        open(keys(), &tampered, LIMITS, NOW),
        Err(OpenError::Tampered)
    );

    // Too old, and from the future.
    assert_eq!(
        open(keys(), &good, LIMITS, NOW + 301),
        Err(OpenError::Expired)
    );
    assert_eq!(
        open(keys(), &good, LIMITS, NOW - 120),
        Err(OpenError::FromFuture)
    );

    // Truncated: in the header, and inside the token.
    assert_eq!(
        open(keys(), &good[..5], LIMITS, NOW),
        Err(OpenError::Truncated)
    );
    assert_eq!(
        open(keys(), &good[..good.len() - 3], LIMITS, NOW),
        Err(OpenError::Truncated)
    );
    assert_eq!(
        open(keys(), &good[..good.len() - 64], LIMITS, NOW),
        Err(OpenError::Tampered)
    );

    // Garbage of all kinds.
    assert_eq!(
        open(keys(), b"hello world, not sealed", LIMITS, NOW),
        Err(OpenError::Garbage)
    );
    let mut not_b64 = good[..11].to_vec();
    not_b64.extend_from_slice(b"!!!!????");
    assert_eq!(open(keys(), &not_b64, LIMITS, NOW), Err(OpenError::Garbage));
    // Text that is not base64, with a multi-byte character across the stamp's end.
    let mut multibyte = good[..11].to_vec();
    multibyte.extend_from_slice("gAAAAABpAAAéAAAAAAAAAAA".as_bytes());
    assert_eq!(
        open(keys(), &multibyte, LIMITS, NOW),
        Err(OpenError::Garbage)
    );
    // A bad character after the stamp: only the full decode sees it.
    let mut late_junk = good.clone();
    let at = late_junk.len() - 8;
    late_junk[at] = b'!';
    assert_eq!(
        open(keys(), &late_junk, LIMITS, NOW),
        Err(OpenError::Tampered)
    );

    // Unknown versions: the envelope byte, and the message schema.
    let mut v2 = good.clone();
    v2[2] = 2;
    assert_eq!(
        open(keys(), &v2, LIMITS, NOW),
        Err(OpenError::UnknownVersion)
    );
    let future_schema = seal_raw_for_tests(keys(), MESSAGE_VERSION + 1, None, NOW);
    assert_eq!(
        open(keys(), &future_schema, LIMITS, NOW),
        Err(OpenError::UnknownVersion)
    );

    // Decrypts, but the content is not a message.
    let junk = seal_raw_for_tests(keys(), 0, Some(b"\xff\x00junk"), NOW);
    assert_eq!(open(keys(), &junk, LIMITS, NOW), Err(OpenError::Malformed));
    let mut wrong_shape = Vec::new();
    ciborium::into_writer(&(MESSAGE_VERSION, "not a message"), &mut wrong_shape).unwrap();
    let wrong_shape = seal_raw_for_tests(keys(), 0, Some(&wrong_shape), NOW);
    assert_eq!(
        open(keys(), &wrong_shape, LIMITS, NOW),
        Err(OpenError::Malformed)
    );
}

#[test]
fn large_body_is_announced_without_it() {
    let big = sample_entry(vec![b'x'; wire::INLINE_BODY_LIMIT + 1]);
    let ann = Announce::of(&big);
    assert!(ann.body.is_none());
    let sealed = seal(keys(), &Message::Announce(ann.clone()), NOW);
    assert!(sealed.len() < MAX_GOSSIP_MESSAGE);
    assert_eq!(ann.into_entry(), Err(Box::new(big.meta.clone())));

    let small = sample_entry(vec![b'x'; wire::INLINE_BODY_LIMIT]);
    let sealed = seal(keys(), &Message::Announce(Announce::of(&small)), NOW);
    assert!(
        sealed.len() < MAX_GOSSIP_MESSAGE,
        "inline announce of {} bytes",
        sealed.len()
    );
}

fn arb_request() -> impl Strategy<Value = CanonicalRequest> {
    (
        "/[a-z0-9_/-]{0,40}",
        prop::collection::vec(("[a-z_]{1,8}", "[a-zA-Z0-9%,.-]{0,12}"), 0..5),
        prop::option::of("application/[a-z.+]{1,20}"),
        prop::option::of("20[0-9]{2}-[0-9]{2}-[0-9]{2}"),
    )
        .prop_filter_map("canonical", |(path, q, accept, ver)| {
            let qs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let pq = if qs.is_empty() {
                path
            } else {
                format!("{path}?{}", qs.join("&"))
            };
            CanonicalRequest::new("GET", &pq, accept.as_deref(), ver.as_deref()).ok()
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        arb_request(),
        prop::collection::vec(any::<u8>(), 0..2048),
        any::<bool>(),
        0u8..9,
        0u64..1_000_000,
    )
        .prop_map(|(req, body, flag, kind, dt)| {
            let mut e = sample_entry(body.clone());
            e = Entry::new(
                req.clone(),
                e.meta.headers,
                body.clone(),
                None,
                NOW * 1000,
                NOW * 1000 + dt,
                "p".into(),
            );
            let key = req.key();
            match kind {
                0 => Message::Announce(Announce::of(&e)),
                1 => Message::Refresh(Refresh {
                    key,
                    cid: e.meta.cid.clone(),
                    fetched_at_ms: NOW * 1000,
                    fresh_until_ms: NOW * 1000 + dt,
                }),
                2 => Message::Lookup(Lookup {
                    addr: addressing(dt),
                    key,
                    request: req,
                    fetch: flag,
                    lease: !flag,
                    release: flag && dt % 2 == 0,
                }),
                3 => Message::LookupReply(if flag {
                    LookupReply::Found(Box::new(Announce::of(&e)))
                } else {
                    LookupReply::Pending
                }),
                4 => Message::FetchBody(FetchBody {
                    addr: addressing(dt),
                    key,
                    cid: e.meta.cid,
                }),
                5 => Message::Hello(Hello {
                    addr: addressing(dt),
                    reach: [Reach::Unknown, Reach::Public, Reach::Private][dt as usize % 3],
                    direct_to_all: [None, Some(false), Some(true)][dt as usize % 3],
                    ledger: Vec::new(),
                    spends: (dt % 2 == 0).then(|| ByteBuf::from(vec![dt as u8; 16])),
                }),
                6 => Message::LookupReply(match dt % 3 {
                    0 => LookupReply::Redirect(ByteBuf::from(vec![7u8; 38])),
                    1 => LookupReply::Busy,
                    _ => LookupReply::Lease,
                }),
                7 => Message::MemberList(MemberList {
                    members: vec![MemberAddr {
                        peer: ByteBuf::from(vec![1u8; 38]),
                        addrs: vec![ByteBuf::from(vec![4u8, 127, 0, 0, 1])],
                        reach: Reach::Public,
                    }],
                }),
                _ => Message::BodyReply(if flag {
                    BodyReply::Found(bytes::Bytes::from(body))
                } else {
                    BodyReply::NotFound
                }),
            }
        })
}

fn addressing(nonce: u64) -> Addressing {
    Addressing {
        from: ByteBuf::from(vec![1u8; 38]),
        to: ByteBuf::from(vec![2u8; 38]),
        nonce,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn seal_open_round_trip(msg in arb_message(), age in 0u64..300) {
        let sealed = seal(keys(), &msg, NOW);
        prop_assert_eq!(open(keys(), &sealed, LIMITS, NOW + age), Ok(msg));
    }

    #[test]
    fn random_bytes_never_open(data in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(open(keys(), &data, LIMITS, NOW).is_err());
    }

    #[test]
    fn any_single_byte_change_is_refused(msg in arb_message(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut sealed = seal(keys(), &msg, NOW);
        let i = pos.index(sealed.len());
        sealed[i] ^= 1 << bit;
        prop_assert!(open(keys(), &sealed, LIMITS, NOW).is_err());
    }

    #[test]
    fn canonical_request_round_trip(req in arb_request()) {
        let again = CanonicalRequest::new(&req.method, &req.path_and_query(), req.accept.as_deref(), req.api_version.as_deref()).unwrap();
        prop_assert_eq!(again.key(), req.key());
        prop_assert!(req.check().is_ok());
    }

    #[test]
    fn entries_validate_after_cbor_round_trip(body in prop::collection::vec(any::<u8>(), 0..4096)) {
        let e = sample_entry(body);
        let mut buf = Vec::new();
        ciborium::into_writer(&e, &mut buf).unwrap();
        let back: Entry = ciborium::from_reader(buf.as_slice()).unwrap();
        prop_assert_eq!(back.validate(&e.meta.key(), NOW * 1000), Ok(()));
        prop_assert_eq!(back, e);
    }
}

/// The shapes of a hello and a member list entry before `direct_to_all` and `reach`
/// were added: version 5 nodes that predate them still send these.
#[derive(serde::Serialize)]
struct HelloBefore {
    addr: Addressing,
    reach: Reach,
}

#[derive(serde::Serialize)]
struct MemberAddrBefore {
    peer: ByteBuf,
    addrs: Vec<ByteBuf>,
}

fn cbor<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

#[test]
fn fields_added_within_version_5_default_when_absent_and_are_ignored_by_older_nodes() {
    let old = HelloBefore {
        addr: addressing(7),
        reach: Reach::Public,
    };
    let hello: Hello = ciborium::from_reader(cbor(&old).as_slice()).unwrap();
    assert_eq!((hello.reach, hello.direct_to_all), (Reach::Public, None));
    assert!(hello.ledger.is_empty());
    let old = MemberAddrBefore {
        peer: ByteBuf::from(vec![1u8; 38]),
        addrs: Vec::new(),
    };
    let member: MemberAddr = ciborium::from_reader(cbor(&old).as_slice()).unwrap();
    assert_eq!(member.reach, Reach::Unknown);

    // An older node reads the new shapes (serde ignores fields it does not know).
    #[derive(serde::Deserialize)]
    struct OldHello {
        reach: Reach,
    }
    let new = Hello {
        addr: addressing(8),
        reach: Reach::Private,
        direct_to_all: Some(true),
        ledger: Vec::new(),
        spends: Some(ByteBuf::from(vec![3; 16])),
    };
    let read: OldHello = ciborium::from_reader(cbor(&new).as_slice()).unwrap();
    assert_eq!(read.reach, Reach::Private);
}
