//! The resolution rules of every flag and environment variable.
use super::test_env as env;
use super::*;

#[test]
fn secret_sources_in_order() {
    let e = env(&[
        ("GITHUB_TOKEN", "gt"),
        ("GH_TOKEN", "gh"),
        ("CACHE_P2P_SHARED_SECRET", "c"),
    ]);
    let (s, src) = mesh_secret(None, &e).unwrap().unwrap();
    assert_eq!(
        (s.as_str(), src),
        ("c", SecretSource::Env("CACHE_P2P_SHARED_SECRET"))
    );
    let e = env(&[("GITHUB_TOKEN", "gt"), ("GH_TOKEN", "")]);
    assert_eq!(
        mesh_secret(None, &e).unwrap().unwrap().0,
        "gt",
        "empty values are skipped"
    );
    assert!(mesh_secret(None, &env(&[])).unwrap().is_none());

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s");
    std::fs::write(&f, "from-file\n").unwrap();
    let e = env(&[("GHMESH_SECRET", "env")]);
    assert_eq!(mesh_secret(Some(&f), &e).unwrap().unwrap().0, "from-file");
    let missing = mesh_secret(Some(&dir.path().join("nope")), &e).unwrap_err();
    assert_eq!(missing.code, 2);
    assert!(!missing.message.contains("env"), "no secret in errors");
    std::fs::write(&f, "\n").unwrap();
    assert_eq!(mesh_secret(Some(&f), &e).unwrap_err().code, 2);
}

#[test]
fn token_and_scope() {
    assert_eq!(
        upstream_token(&env(&[("GITHUB_TOKEN", "b"), ("GH_TOKEN", "a")])).as_deref(),
        Some("a")
    );
    assert_eq!(
        scope(None, &env(&[("GITHUB_REPOSITORY", "o/r")])).unwrap(),
        "o/r"
    );
    assert_eq!(
        scope(Some("x/y"), &env(&[("GHMESH_REPO", "o/r")])).unwrap(),
        "x/y"
    );
    assert_eq!(scope(None, &env(&[])).unwrap(), "");
    assert_eq!(scope(Some("nope"), &env(&[])).unwrap_err().code, 2);
    assert!(looks_like_job_token("ghs_abc"));
    assert!(!looks_like_job_token("ghp_abc"));
}

#[test]
fn listen_and_bootstrap() {
    let e = env(&[("CACHE_LISTEN_PORT", "9200")]);
    assert_eq!(
        listen(&[], &e).unwrap()[0].to_string(),
        "/ip4/0.0.0.0/tcp/9200"
    );
    assert_eq!(
        listen(&[], &e).unwrap()[1].to_string(),
        "/ip4/0.0.0.0/udp/9200/quic-v1",
        "QUIC next to TCP on the same port"
    );
    let e = env(&[
        ("GHMESH_LISTEN", "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.2/tcp/0"),
        ("CACHE_LISTEN_PORT", "1"),
    ]);
    assert_eq!(listen(&[], &e).unwrap().len(), 2);
    let default: Vec<String> = listen(&[], &env(&[]))
        .unwrap()
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(
        default,
        ["/ip4/0.0.0.0/tcp/9100", "/ip4/0.0.0.0/udp/9100/quic-v1"]
    );
    assert_eq!(listen(&["garbage".into()], &env(&[])).unwrap_err().code, 2);
    assert_eq!(
        listen(&[], &env(&[("CACHE_LISTEN_PORT", "x")]))
            .unwrap_err()
            .code,
        2
    );
    let e = env(&[("CACHE_BOOTSTRAP_PEERS", "/ip4/10.0.0.1/tcp/9100")]);
    assert_eq!(bootstrap(&[], &e).unwrap().len(), 1);
    assert!(bootstrap(&[], &env(&[])).unwrap().is_empty());
}

#[test]
fn numbers_and_dirs() {
    assert_eq!(
        ttl(None, &env(&[("CACHE_DEFAULT_TTL", "30")])).unwrap(),
        Some(30)
    );
    assert_eq!(
        ttl(Some(5), &env(&[("GHMESH_TTL", "30")])).unwrap(),
        Some(5)
    );
    assert_eq!(
        ttl(None, &env(&[("GHMESH_TTL", "soon")])).unwrap_err().code,
        2
    );
    let l = limits(None, None, &env(&[("CACHE_MAX_SIZE", "10")])).unwrap();
    assert_eq!(l.max_entries, 10);
    assert_eq!(l.max_bytes, 1 << 30);
    assert_eq!(
        data_dir(None, &env(&[("XDG_CACHE_HOME", "/x")])),
        PathBuf::from("/x/ghmesh")
    );
    assert_eq!(
        data_dir(None, &env(&[("HOME", "/h")])),
        PathBuf::from("/h/.cache/ghmesh")
    );
    assert_eq!(
        data_dir(None, &env(&[("CACHE_DIR", "/c"), ("HOME", "/h")])),
        PathBuf::from("/c")
    );
    assert_eq!(
        upstream_url(
            None,
            &env(&[("GITHUB_API_URL", "https://ghe.example/api/v3/")])
        )
        .unwrap(),
        "https://ghe.example/api/v3"
    );
    assert_eq!(
        upstream_url(Some("ftp://x"), &env(&[])).unwrap_err().code,
        2
    );
    assert!(env_flag_off(
        &env(&[("GHMESH_MDNS", "false")]),
        "GHMESH_MDNS"
    ));
    assert!(!env_flag_off(
        &env(&[("GHMESH_MDNS", "true")]),
        "GHMESH_MDNS"
    ));
}

#[test]
fn trust_settings_from_flags_and_env() {
    use crate::api::ClientTokens;
    let none = env(&[]);
    assert!(api_hosts(&[], &none).unwrap().is_empty());
    assert_eq!(
        api_hosts(
            &[],
            &env(&[("GHMESH_API_HOST", "Cache.Internal,ghmesh.ci.svc")])
        )
        .unwrap(),
        vec!["cache.internal".to_string(), "ghmesh.ci.svc".to_string()]
    );
    assert_eq!(
        api_hosts(&["a.example".into()], &env(&[("GHMESH_API_HOST", "b")])).unwrap(),
        vec!["a.example".to_string()],
        "flags win"
    );
    let bad = api_hosts(&[], &env(&[("GHMESH_API_HOST", "http://x:1")])).unwrap_err();
    assert_eq!(bad.code, 2);
    assert!(bad.message.contains("GHMESH_API_HOST"), "{}", bad.message);

    assert_eq!(upstream_concurrency(None, &none).unwrap(), 8);
    let e = env(&[("GHMESH_UPSTREAM_CONCURRENCY", "3")]);
    assert_eq!(upstream_concurrency(None, &e).unwrap(), 3);
    assert_eq!(upstream_concurrency(Some(5), &e).unwrap(), 5);
    for v in ["0", "101", "many"] {
        let e = env(&[("GHMESH_UPSTREAM_CONCURRENCY", v)]);
        assert_eq!(upstream_concurrency(None, &e).unwrap_err().code, 2, "{v}");
    }

    assert_eq!(client_tokens(None, &none).unwrap(), ClientTokens::Share);
    let e = env(&[("GHMESH_CLIENT_TOKENS", "BYPASS")]);
    assert_eq!(client_tokens(None, &e).unwrap(), ClientTokens::Bypass);
    assert_eq!(
        client_tokens(Some(ClientTokens::Share), &e).unwrap(),
        ClientTokens::Share
    );
    let e = env(&[("GHMESH_CLIENT_TOKENS", "lend")]);
    assert_eq!(client_tokens(None, &e).unwrap_err().code, 2);
}

#[test]
fn relay_mode_and_external_addresses() {
    use crate::network::RelayMode;
    assert_eq!(relay(None, &env(&[])).unwrap(), RelayMode::Auto);
    assert_eq!(
        relay(None, &env(&[("GHMESH_RELAY", "ON")])).unwrap(),
        RelayMode::On
    );
    assert_eq!(
        relay(None, &env(&[("GHMESH_RELAY", "off")])).unwrap(),
        RelayMode::Off
    );
    assert_eq!(
        relay(Some(RelayMode::Off), &env(&[("GHMESH_RELAY", "on")])).unwrap(),
        RelayMode::Off,
        "the flag wins"
    );
    let e = relay(None, &env(&[("GHMESH_RELAY", "sometimes")])).unwrap_err();
    assert_eq!(e.code, 2);
    assert!(e.message.contains("auto, on or off"), "{}", e.message);
    let e = env(&[("GHMESH_EXTERNAL_ADDR", "/ip4/198.51.100.7/tcp/9100")]);
    assert_eq!(external(&[], &e).unwrap().len(), 1);
}

#[test]
fn public_dht_is_off_unless_asked_and_enters_only_through_named_peers() {
    assert_eq!(public_dht(false, &[], &env(&[])).unwrap(), None);
    let e = env(&[("GHMESH_PUBLIC_BOOTSTRAP", "/ip4/203.0.113.9/tcp/4001")]);
    assert_eq!(
        public_dht(false, &[], &e).unwrap(),
        None,
        "bootstrap addresses alone turn nothing on"
    );
    let e = env(&[("GHMESH_PUBLIC_BOOTSTRAP", "not an address")]);
    assert_eq!(
        public_dht(false, &[], &e).unwrap(),
        None,
        "not even read while off"
    );
    let default = public_dht(false, &[], &env(&[("GHMESH_PUBLIC_DHT", "true")]))
        .unwrap()
        .unwrap();
    assert_eq!(default.len(), PUBLIC_BOOTSTRAP.len());
    let id = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    let one = format!("/ip4/198.51.100.9/tcp/4001/p2p/{id}");
    let flags = [one.clone()];
    assert_eq!(
        public_dht(true, &flags, &env(&[])).unwrap().unwrap(),
        vec![one.parse::<Multiaddr>().unwrap()]
    );
    let e = public_dht(
        true,
        &[],
        &env(&[("GHMESH_PUBLIC_BOOTSTRAP", "/ip4/1.2.3.4/tcp/1")]),
    )
    .unwrap_err();
    assert_eq!(e.code, 2);
    assert!(e.message.contains("/p2p/<peer id>"), "{}", e.message);
    let e = public_dht(false, &[], &env(&[("GHMESH_PUBLIC_DHT", "maybe")])).unwrap_err();
    assert!(e.message.contains("true or false"), "{}", e.message);
}
