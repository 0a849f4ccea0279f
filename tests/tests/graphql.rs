//! GraphQL through a fleet of real `ghmesh` daemons and the fake GitHub's GraphQL
//! endpoint (contract §9): queries read once for the fleet whatever their spelling,
//! mutations passed through and making cached answers stale everywhere, per-token
//! queries never crossing tokens, error answers never stored.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use ghmesh_tests::daemon::*;
use ghmesh_tests::fake_github::FakeGithub;
use serde_json::{json, Value};

/// Posts a GraphQL body to `node` (at `path`), with `token` as the client's own.
async fn post(
    node: &Daemon,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Vec<(String, String)>, Value) {
    let auth = token.map(|t| format!("bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let url = format!("{}{path}", node.base());
    let (status, h, b) = http_request("POST", &url, &headers, body.to_string().as_bytes())
        .await
        .unwrap();
    let json = serde_json::from_slice(&b).unwrap_or(Value::Null);
    (status, h, json)
}

async fn query(node: &Daemon, token: Option<&str>, q: &str, vars: Value) -> (String, Value) {
    let (status, h, body) = post(
        node,
        "/graphql",
        token,
        &json!({ "query": q, "variables": vars }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    (header(&h, "x-ghmesh-cache").unwrap_or("").to_string(), body)
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats["counters"][name]
        .as_u64()
        .or_else(|| stats[name].as_u64())
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
}

/// 20 distinct queries: one repository each, in two spellings.
fn spellings(i: usize) -> (String, String) {
    let tidy = format!(
        "query Repo($owner: String!) {{ repository(owner: $owner, name: \"r{i}\") {{ nameWithOwner issues(first: 5) {{ nodes {{ number title }} pageInfo {{ hasNextPage endCursor }} }} }} }}"
    );
    let messy = format!(
        "# repository r{i}\nquery Repo( $owner : String! ) {{\n  repository( owner:$owner, name:\"r{i}\" ) {{\n    nameWithOwner,\n    issues( first:5 ) {{ nodes {{ number, title }} , pageInfo {{ hasNextPage , endCursor }} }}\n  }}\n}}\n"
    );
    (tidy, messy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_reads_each_query_once_whatever_its_spelling() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nodes = fleet(3, &gh, &[], &dir).await.unwrap();
    let vars = json!({ "owner": "acme" });
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..20 {
            let (tidy, _) = spellings(i);
            let (cache, body) = query(node, None, &tidy, vars.clone()).await;
            assert_eq!(
                body["data"]["repository"]["nameWithOwner"],
                format!("acme/r{i}")
            );
            if n > 0 {
                assert_ne!(cache, "miss", "query {i} on node {n} was fetched again");
            }
        }
    }
    assert_eq!(gh.graphql_requests(), 20);
    // Every spelling of a query is that query; so is the GHES path.
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..20 {
            let (_, messy) = spellings(i);
            let path = if n == 2 {
                "/api/v3/graphql"
            } else {
                "/graphql"
            };
            let (status, _, body) = post(
                node,
                path,
                None,
                &json!({ "query": messy, "variables": vars }),
            )
            .await;
            assert_eq!(status, 200);
            assert_eq!(
                body["data"]["repository"]["nameWithOwner"],
                format!("acme/r{i}")
            );
        }
    }
    assert_eq!(
        gh.graphql_requests(),
        20,
        "a reformatted query is the same entry"
    );
    let stats = nodes[0].stats().await.unwrap();
    assert!(counter(&stats, "graphql_hits") >= 20, "{stats}");
    assert!(counter(&stats, "graphql_misses") + counter(&stats, "graphql_hits") >= 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_pass_through_and_make_cached_answers_stale_fleet_wide() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nodes = fleet(3, &gh, &[], &dir).await.unwrap();
    let read = "{ repository(owner: \"acme\", name: \"widgets\") { issue(number: 7) { id comments { totalCount nodes { body } } } } }";
    let (_, before) = query(&nodes[0], None, read, json!({})).await;
    let issue = &before["data"]["repository"]["issue"];
    assert_eq!(issue["comments"]["totalCount"], 0);
    poll("the answer held by every node", || async {
        let mut all = true;
        for n in &nodes {
            all &= n
                .stats()
                .await
                .map(|s| s["entries"].as_u64() == Some(1))
                .unwrap_or(false);
        }
        all
    })
    .await;
    let calls = gh.graphql_requests();
    let (cache, _) = query(&nodes[2], None, read, json!({})).await;
    assert!(cache == "hit" || cache == "peer", "{cache}");
    assert_eq!(
        gh.graphql_requests(),
        calls,
        "served from the copy node 2 holds"
    );

    let add = json!({
        "query": "mutation($id: ID!) { addComment(input: {subjectId: $id, body: \"hi\"}) { commentEdge { node { body } } } }",
        "variables": { "id": issue["id"] },
    });
    // Without the client's own token a mutation goes nowhere.
    let (status, _, _) = post(&nodes[1], "/graphql", None, &add).await;
    assert_eq!(status, 401);
    let before_calls = gh.graphql_requests();
    for _ in 0..2 {
        let (status, h, body) = post(&nodes[1], "/graphql", Some("ghp_writer"), &add).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&h, "x-ghmesh-cache"), Some("bypass"));
    }
    assert_eq!(
        gh.graphql_requests(),
        before_calls + 2,
        "mutations are never cached"
    );
    // The writer's node marked it stale before answering; the others once the
    // invalidation arrives: every node then reads the comments, none serves the old
    // answer.
    let (_, here) = query(&nodes[1], None, read, json!({})).await;
    assert_eq!(
        here["data"]["repository"]["issue"]["comments"]["totalCount"],
        2
    );
    poll("the invalidation on node 2", || async {
        nodes[2]
            .stats()
            .await
            .map(|s| counter(&s, "invalidated") >= 1)
            .unwrap_or(false)
    })
    .await;
    let (_, there) = query(&nodes[2], None, read, json!({})).await;
    assert_eq!(
        there["data"]["repository"]["issue"]["comments"]["totalCount"],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_token_queries_and_error_answers_are_never_stored_or_shared() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nodes = fleet(2, &gh, &[], &dir).await.unwrap();
    let viewer = "{ viewer { login } }";
    for token in ["ghp_alice", "ghp_bob"] {
        for node in &nodes {
            let (cache, body) = query(node, Some(token), viewer, json!({})).await;
            assert_eq!(cache, "bypass");
            assert_eq!(
                body["data"]["viewer"]["login"],
                FakeGithub::login_of(Some(token))
            );
        }
    }
    // A per-token field deeper in the query, through a fragment, also bypasses.
    let starred = "query { repository(owner: \"a\", name: \"b\") { ...S } } fragment S on Repository { viewerHasStarred }";
    let (cache, _) = query(&nodes[0], Some("ghp_alice"), starred, json!({})).await;
    assert_eq!(cache, "bypass");
    // Partial data with errors: for the asker only, fetched again each time.
    let partial = "{ a: repository(owner: \"o\", name: \"missing\") { name } b: repository(owner: \"o\", name: \"r\") { name } }";
    // (An owner asked to fetch it does not share what it got, so the asker may fetch
    // it again: errors cost calls, never a wrong answer.)
    for node in nodes.iter().chain(&nodes) {
        let before = gh.graphql_requests();
        let (cache, body) = query(node, None, partial, json!({})).await;
        assert_eq!(cache, "miss");
        assert_eq!(body["errors"][0]["type"], "NOT_FOUND");
        assert!(gh.graphql_requests() > before, "not served from a cache");
    }
    // A document that does not parse passes through (GitHub's own error), with the
    // client's token only.
    let (status, _, _) = post(&nodes[0], "/graphql", None, &json!({ "query": "{ viewer" })).await;
    assert_eq!(status, 401);
    let (status, _, body) = post(
        &nodes[0],
        "/graphql",
        Some("ghp_alice"),
        &json!({ "query": "{ viewer" }),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["errors"][0]["message"].is_string(), "{body}");
    for node in &nodes {
        let stats = node.stats().await.unwrap();
        assert_eq!(stats["entries"], 0, "nothing stored: {stats}");
        assert!(counter(&stats, "graphql_bypassed") >= 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_graphql_budget_holds_the_token_and_serves_what_is_held() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Held answers expire at once: every read after the first goes upstream.
    let nodes = fleet(1, &gh, &["--graphql-ttl", "0"], &dir).await.unwrap();
    let q = "{ repository(owner: \"acme\", name: \"widgets\") { nameWithOwner } }";
    let (cache, first) = query(&nodes[0], None, q, json!({})).await;
    assert_eq!(cache, "miss");
    gh.set_graphql_limit(1);
    // Spent: GitHub answers 200 with RATE_LIMITED; the held copy is served stale.
    let (cache, body) = query(&nodes[0], None, q, json!({})).await;
    assert_eq!(cache, "stale", "{body}");
    assert_eq!(body, first);
    let sent = gh.total_requests();
    // Held: the token is not sent again until the reset.
    let (cache, _) = query(&nodes[0], None, q, json!({})).await;
    assert_eq!(cache, "stale");
    assert_eq!(gh.total_requests(), sent, "held, not sent");
    let stats = nodes[0].stats().await.unwrap();
    assert!(counter(&stats, "upstream_held") >= 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghmesh_api_graphql_takes_fields_as_variables_and_pages_as_gh() {
    let gh = FakeGithub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = lone_daemon(&gh, &dir).await.unwrap();
    let e = vec![("GHMESH_API", node.ready.api.clone())];
    let query = "query($owner: String!, $name: String!, $n: Int!, $endCursor: String) { repository(owner: $owner, name: $name) { issues(first: $n, after: $endCursor) { nodes { number } pageInfo { hasNextPage endCursor } } } }";
    let q = format!("query={query}");
    let run = |extra: &[&str]| {
        let mut a = vec![
            "graphql",
            "-f",
            &q,
            "-f",
            "owner=acme",
            "-f",
            "name=widgets",
        ];
        a.extend_from_slice(extra);
        tokio::task::block_in_place(|| ghmesh_api(&a, &e).unwrap())
    };
    // -F types its value (an integer here), --jq runs on every page.
    let paged = [
        "-F",
        "n=100",
        "--paginate",
        "--jq",
        ".data.repository.issues.nodes | length",
    ];
    let o = run(&paged);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "100\n100\n50\n");
    assert_eq!(gh.graphql_requests(), 3);
    // Again: every page from the cache.
    let o = run(&paged);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "100\n100\n50\n");
    assert_eq!(gh.graphql_requests(), 3, "pages served from the cache");
    // Without --jq the pages are printed one after another, each as GitHub sent it.
    let o = run(&["-F", "n=100", "--paginate"]);
    let pages: Vec<Value> = serde_json::Deserializer::from_slice(&o.stdout)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(pages.len(), 3);
    assert_eq!(
        pages[2]["data"]["repository"]["issues"]["pageInfo"]["hasNextPage"],
        false
    );
    // One page without --paginate.
    let o = run(&[
        "-F",
        "n=5",
        "--jq",
        ".data.repository.issues.nodes[0].number",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "250\n");
    // An answer with errors is printed, and the command fails with their messages.
    let missing = "query=query { repository(owner: \"acme\", name: \"missing\") { name } }";
    let o = tokio::task::block_in_place(|| ghmesh_api(&["graphql", "-f", missing], &e).unwrap());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("NOT_FOUND"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("GraphQL: Could not resolve to a Repository"),
        "{err}"
    );
}
