#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! The fake GitHub's GraphQL endpoint answers as GitHub does: real execution over a
//! slice of the schema, cursors, per-token answers, a mutation whose effect later
//! reads see, partial and rate-limited answers.

use std::time::Duration;

use ghmesh_tests::fake_github::FakeGithub;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn graphql(
    gh: &FakeGithub,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut req = client.post(format!("{}/graphql", gh.url())).json(&body);
    if let Some(t) = token {
        req = req.header("authorization", format!("bearer {t}"));
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap())
}

const PAGE: &str = "query($owner: String!, $name: String!, $endCursor: String) {
  repository(owner: $owner, name: $name) {
    nameWithOwner
    issues(first: 100, after: $endCursor) {
      totalCount
      nodes { number title }
      pageInfo { hasNextPage endCursor }
    }
  }
}";

#[tokio::test]
async fn connections_page_through_cursors_and_answers_repeat_byte_for_byte() {
    let gh = FakeGithub::start().await.unwrap();
    let mut cursor = Value::Null;
    let mut numbers = Vec::new();
    let mut first_page = None;
    for _ in 0..5 {
        let vars = json!({ "owner": "acme", "name": "widgets", "endCursor": cursor });
        let (status, headers, body) =
            graphql(&gh, Some("t1"), json!({ "query": PAGE, "variables": vars })).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-ratelimit-resource"], "graphql");
        assert!(body.get("errors").is_none(), "{body}");
        let issues = &body["data"]["repository"]["issues"];
        assert_eq!(body["data"]["repository"]["nameWithOwner"], "acme/widgets");
        assert_eq!(issues["totalCount"], 250);
        numbers.extend(
            issues["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["number"].as_u64().unwrap()),
        );
        first_page.get_or_insert(body.clone());
        if issues["pageInfo"]["hasNextPage"] == false {
            break;
        }
        cursor = issues["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(numbers, (1..=250).rev().collect::<Vec<_>>());
    // The same query is answered the same whoever asks (no per-token field in it).
    let vars = json!({ "owner": "acme", "name": "widgets" });
    let (_, _, again) = graphql(&gh, Some("t2"), json!({ "query": PAGE, "variables": vars })).await;
    assert_eq!(Some(again), first_page);
    assert_eq!(gh.graphql_requests(), 4);
}

#[tokio::test]
async fn viewer_and_rate_limit_differ_per_token_and_aliases_and_fragments_work() {
    let gh = FakeGithub::start().await.unwrap();
    let q = "query { me: viewer { ...Who } rateLimit { remaining cost } } fragment Who on User { login }";
    let (_, _, a) = graphql(&gh, Some("t1"), json!({ "query": q })).await;
    let (_, _, b) = graphql(&gh, Some("t2"), json!({ "query": q })).await;
    assert_eq!(a["data"]["me"]["login"], FakeGithub::login_of(Some("t1")));
    assert_eq!(b["data"]["me"]["login"], FakeGithub::login_of(Some("t2")));
    assert_ne!(a, b);
    assert_eq!(a["data"]["rateLimit"]["remaining"], 4999);
    assert_eq!(a["data"]["rateLimit"]["cost"], 1);
}

#[tokio::test]
async fn a_mutation_changes_what_later_reads_see() {
    let gh = FakeGithub::start().await.unwrap();
    let read = json!({ "query": "{ repository(owner: \"acme\", name: \"widgets\") { issue(number: 7) { id comments { totalCount nodes { body } } } } }" });
    let (_, _, before) = graphql(&gh, Some("t1"), read.clone()).await;
    let issue = &before["data"]["repository"]["issue"];
    assert_eq!(issue["comments"]["totalCount"], 0);
    let id = issue["id"].as_str().unwrap().to_string();
    let add = json!({
        "query": "mutation($id: ID!, $body: String!) { addComment(input: {subjectId: $id, body: $body}) { commentEdge { node { body } } } }",
        "variables": { "id": id, "body": "hi" },
    });
    let (status, _, added) = graphql(&gh, Some("t1"), add).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        added["data"]["addComment"]["commentEdge"]["node"]["body"],
        "hi"
    );
    let (_, _, after) = graphql(&gh, Some("t2"), read).await;
    let comments = &after["data"]["repository"]["issue"]["comments"];
    assert_eq!(comments["totalCount"], 1);
    assert_eq!(comments["nodes"][0]["body"], "hi");
}

#[tokio::test]
async fn errors_come_as_github_sends_them() {
    let gh = FakeGithub::start().await.unwrap();
    // Anonymous: 401, nothing spent.
    let (status, _, _) = graphql(&gh, None, json!({ "query": "{ viewer { login } }" })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(gh.graphql_requests(), 0);
    // A document that does not parse, a field that does not exist: 200, errors, no data.
    for q in [
        "{ viewer { login }",
        "{ repository(owner: \"a\", name: \"b\") { nope } }",
    ] {
        let (status, _, body) = graphql(&gh, Some("t1"), json!({ "query": q })).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.get("data").is_none(), "{body}");
        assert!(body["errors"][0]["message"].is_string(), "{body}");
    }
    // A repository that does not exist: partial data beside a NOT_FOUND error.
    let q = "{ a: repository(owner: \"o\", name: \"missing\") { name } b: repository(owner: \"o\", name: \"r\") { name } }";
    let (_, _, body) = graphql(&gh, Some("t1"), json!({ "query": q })).await;
    assert_eq!(body["data"]["a"], Value::Null);
    assert_eq!(body["data"]["b"]["name"], "r");
    assert_eq!(body["errors"][0]["type"], "NOT_FOUND");
    // The budget spent: 200 with RATE_LIMITED, and the headers say graphql, 0 left.
    gh.set_graphql_limit(3);
    let (status, headers, body) =
        graphql(&gh, Some("t1"), json!({ "query": "{ viewer { login } }" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["errors"][0]["type"], "RATE_LIMITED", "{body}");
    assert!(body.get("data").is_none());
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert_eq!(headers["x-ratelimit-resource"], "graphql");
    // Another token still has its own budget.
    let (_, _, body) = graphql(&gh, Some("t2"), json!({ "query": "{ viewer { login } }" })).await;
    assert!(body.get("errors").is_none(), "{body}");
}
