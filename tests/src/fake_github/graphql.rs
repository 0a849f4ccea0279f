//! The fake's GraphQL endpoint (`POST /graphql`): a small slice of GitHub's schema,
//! executed for real over the parsed document, with GitHub's ways of answering.
//!
//! - `repository(owner, name)` with `name`, `nameWithOwner`, `owner { login }`,
//!   `stargazerCount`, `issue(number)`, and `issues` / `pullRequests` connections
//!   (`first`, `after`; `nodes`, `edges { cursor node }`, `pageInfo`, `totalCount`).
//!   A repository whose name starts with `missing` is `null` with a `NOT_FOUND` error
//!   beside the rest of the data: a partial answer.
//! - `viewer { login }` (the token's own login) and `rateLimit { limit cost remaining
//!   used resetAt }`: answers that differ per token.
//! - `mutation { addComment(input: { subjectId, body }) { … } }`: the comment shows
//!   in `issue(number) { comments { totalCount nodes { body } } }` afterwards.
//! - Anonymous requests get `401`; a document that does not parse, or names a field
//!   the slice does not have, gets `200` with `errors` and no `data`, as on GitHub.
//! - A separate budget per token (`x-ratelimit-resource: graphql`, one point a
//!   request); once spent, `200` with a `RATE_LIMITED` error.
//!
//! Counting: `graphql_requests` counts the answers that spent a point (data, partial
//! or not), whatever the document.

use std::collections::HashMap;

use apollo_parser::cst::{self, CstNode};
use apollo_parser::Parser;
use http::request::Parts;
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::{hash_u64, iso, json_response, lock, FakeGithub, Identity, Rate, Response, Shared};

/// GitHub's GraphQL budget per token and hour.
pub(super) const DEFAULT_GRAPHQL_LIMIT: u64 = 5000;
/// Issues in every repository's `issues` connection, numbered from this down to 1.
const ISSUES: u64 = 250;
/// Pull requests in every repository's `pullRequests` connection.
const PULLS: u64 = 120;
/// Largest `first` GitHub accepts on a connection.
const MAX_FIRST: u64 = 100;

/// Answers one GraphQL request.
pub(super) fn serve(shared: &Shared, parts: &Parts, body: &[u8]) -> Response {
    let who = Identity::from_headers(&parts.headers);
    if who == Identity::Anonymous {
        return json_response(
            StatusCode::UNAUTHORIZED,
            Vec::new(),
            &json!({
                "message": "This endpoint requires you to be authenticated.",
                "documentation_url": "https://docs.github.com/graphql/guides/forming-calls-with-graphql#authenticating-with-graphql",
            }),
        );
    }
    let rate = match shared.consume_graphql(&who) {
        Ok(rate) => rate,
        Err(rate) => {
            return answer(
                &rate,
                &json!({ "errors": [{
                    "type": "RATE_LIMITED",
                    "code": "graphql_rate_limit",
                    "message": format!("API rate limit already exceeded for {}.", who.describe()),
                }]}),
            )
        }
    };
    shared
        .graphql_full
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(query) = request.get("query").and_then(Value::as_str) else {
        return answer(
            &rate,
            &errors("A query attribute must be specified and must be a string."),
        );
    };
    let variables = request
        .get("variables")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let name = request.get("operationName").and_then(Value::as_str);
    let mut run = Run {
        shared,
        who: &who,
        rate: &rate,
        variables,
        fragments: HashMap::new(),
        errors: Vec::new(),
        invalid: false,
    };
    let data = run.document(query, name);
    let mut out = Map::new();
    if !run.invalid {
        out.insert("data".into(), data);
    }
    if !run.errors.is_empty() {
        out.insert("errors".into(), Value::Array(run.errors));
    }
    answer(&rate, &Value::Object(out))
}

fn answer(rate: &Rate, body: &Value) -> Response {
    let mut headers = rate.headers();
    for h in headers.iter_mut() {
        if h.0 == "x-ratelimit-resource" {
            h.1 = "graphql".into();
        }
    }
    json_response(StatusCode::OK, headers, body)
}

fn errors(message: &str) -> Value {
    json!({ "errors": [{ "message": message }] })
}

/// One execution: the variables, the fragments, the errors met so far.
struct Run<'a> {
    shared: &'a Shared,
    who: &'a Identity,
    rate: &'a Rate,
    variables: Map<String, Value>,
    fragments: HashMap<String, cst::SelectionSet>,
    errors: Vec<Value>,
    /// A validation error: GitHub answers `errors` alone, without `data`.
    invalid: bool,
}

impl Run<'_> {
    fn document(&mut self, query: &str, name: Option<&str>) -> Value {
        let tree = Parser::new(query).parse();
        if let Some(e) = tree.errors().next() {
            self.invalid = true;
            self.errors
                .push(json!({ "message": format!("Parse error: {}", e.message()) }));
            return Value::Null;
        }
        let doc = tree.document();
        let mut ops = Vec::new();
        for def in doc.definitions() {
            match def {
                cst::Definition::OperationDefinition(op) => ops.push(op),
                cst::Definition::FragmentDefinition(f) => {
                    let name = f
                        .fragment_name()
                        .and_then(|n| n.name())
                        .map(|n| n.text().to_string());
                    if let (Some(name), Some(set)) = (name, f.selection_set()) {
                        self.fragments.insert(name, set);
                    }
                }
                _ => {}
            }
        }
        let op = match name {
            Some(n) => ops
                .into_iter()
                .find(|o| o.name().is_some_and(|x| x.text() == n)),
            None if ops.len() == 1 => ops.pop(),
            None => None,
        };
        let Some(op) = op else {
            self.invalid = true;
            self.errors.push(json!({ "message": "No operation named or several operations without operationName" }));
            return Value::Null;
        };
        let mutation = op
            .operation_type()
            .is_some_and(|t| t.mutation_token().is_some());
        let root = if mutation { "Mutation" } else { "Query" };
        match op.selection_set() {
            Some(set) => self.select(&set, root, &Value::Null),
            None => Value::Null,
        }
    }

    /// The fields of `set` on an object of type `ty` (whose data is `parent`).
    fn select(&mut self, set: &cst::SelectionSet, ty: &str, parent: &Value) -> Value {
        let mut out = Map::new();
        self.select_into(set, ty, parent, &mut out);
        Value::Object(out)
    }

    fn select_into(
        &mut self,
        set: &cst::SelectionSet,
        ty: &str,
        parent: &Value,
        out: &mut Map<String, Value>,
    ) {
        for sel in set.selections() {
            match sel {
                cst::Selection::Field(f) => {
                    let Some(name) = f.name().map(|n| n.text().to_string()) else {
                        continue;
                    };
                    let key = f
                        .alias()
                        .and_then(|a| a.name())
                        .map(|n| n.text().to_string())
                        .unwrap_or_else(|| name.clone());
                    let args = self.arguments(&f);
                    let value = self.field(ty, &name, &args, parent, f.selection_set());
                    out.insert(key, value);
                }
                cst::Selection::InlineFragment(i) => {
                    if let Some(s) = i.selection_set() {
                        self.select_into(&s, ty, parent, out);
                    }
                }
                cst::Selection::FragmentSpread(s) => {
                    let name = s
                        .fragment_name()
                        .and_then(|n| n.name())
                        .map(|n| n.text().to_string());
                    if let Some(set) = name.and_then(|n| self.fragments.get(&n).cloned()) {
                        self.select_into(&set, ty, parent, out);
                    }
                }
            }
        }
    }

    fn arguments(&self, f: &cst::Field) -> Map<String, Value> {
        let mut out = Map::new();
        for arg in f.arguments().into_iter().flat_map(|a| a.arguments()) {
            if let (Some(n), Some(v)) = (arg.name(), arg.value()) {
                out.insert(n.text().to_string(), self.value(&v));
            }
        }
        out
    }

    fn value(&self, v: &cst::Value) -> Value {
        match v {
            cst::Value::Variable(var) => var
                .name()
                .and_then(|n| self.variables.get(n.text().as_str()).cloned())
                .unwrap_or(Value::Null),
            cst::Value::StringValue(s) => Value::String(String::from(s.clone())),
            cst::Value::IntValue(i) => i
                .source_string()
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or(Value::Null),
            cst::Value::BooleanValue(b) => Value::Bool(b.source_string().trim() == "true"),
            cst::Value::EnumValue(e) => Value::String(e.source_string().trim().to_string()),
            cst::Value::ListValue(l) => Value::Array(l.values().map(|v| self.value(&v)).collect()),
            cst::Value::ObjectValue(o) => Value::Object(
                o.object_fields()
                    .filter_map(|f| Some((f.name()?.text().to_string(), self.value(&f.value()?))))
                    .collect(),
            ),
            _ => Value::Null,
        }
    }

    /// Resolves field `name` of type `ty`; objects recurse into `set`.
    fn field(
        &mut self,
        ty: &str,
        name: &str,
        args: &Map<String, Value>,
        parent: &Value,
        set: Option<cst::SelectionSet>,
    ) -> Value {
        if name == "__typename" {
            return Value::String(ty.to_string());
        }
        let resolved = match (ty, name) {
            ("Query", "viewer") => Some((
                "User",
                json!({ "login": FakeGithub::login_of_identity(self.who) }),
            )),
            ("Query", "rateLimit") => Some((
                "RateLimit",
                json!({
                    "limit": self.rate.limit,
                    "cost": 1,
                    "remaining": self.rate.remaining(),
                    "used": self.rate.used,
                    "resetAt": iso(self.rate.reset),
                }),
            )),
            ("Query", "repository") => {
                let owner = args.get("owner").and_then(Value::as_str).unwrap_or("");
                let repo = args.get("name").and_then(Value::as_str).unwrap_or("");
                if repo.starts_with("missing") {
                    self.errors.push(json!({
                        "type": "NOT_FOUND",
                        "path": ["repository"],
                        "message": format!("Could not resolve to a Repository with the name '{owner}/{repo}'."),
                    }));
                    return Value::Null;
                }
                Some((
                    "Repository",
                    json!({
                        "owner": owner, "name": repo,
                        "nameWithOwner": format!("{owner}/{repo}"),
                        "stargazerCount": hash_u64(&["stars", owner, repo]) % 10_000,
                    }),
                ))
            }
            ("Mutation", "addComment") => Some(("AddCommentPayload", self.add_comment(args))),
            ("Repository", "issues" | "pullRequests") => {
                let total = if name == "issues" { ISSUES } else { PULLS };
                Some(("Connection", connection(parent, name, total, args)))
            }
            ("Repository", "issue") => {
                let n = args.get("number").and_then(Value::as_u64).unwrap_or(0);
                (1..=ISSUES)
                    .contains(&n)
                    .then(|| ("Issue", issue(parent, "issues", n)))
            }
            ("Repository", "owner") => Some(("User", json!({ "login": parent["owner"] }))),
            ("Issue", "comments") => {
                let bodies = lock(&self.shared.graphql_comments)
                    .get(parent["id"].as_str().unwrap_or(""))
                    .cloned()
                    .unwrap_or_default();
                Some((
                    "CommentConnection",
                    json!({
                        "totalCount": bodies.len(),
                        "nodes": bodies.iter().map(|b| json!({ "body": b })).collect::<Vec<_>>(),
                    }),
                ))
            }
            (
                "Connection" | "CommentConnection" | "AddCommentPayload" | "CommentEdge"
                | "PageInfo" | "Repository" | "Issue" | "User" | "RateLimit" | "Edge" | "Comment",
                _,
            ) => parent.get(name).map(|v| (child_type(name), v.clone())),
            _ => None,
        };
        let Some((child_ty, value)) = resolved else {
            self.invalid = true;
            self.errors.push(json!({
                "path": [name],
                "extensions": { "code": "undefinedField", "typeName": ty, "fieldName": name },
                "message": format!("Field '{name}' doesn't exist on type '{ty}'"),
            }));
            return Value::Null;
        };
        match (set, value) {
            (Some(set), Value::Array(items)) => Value::Array(
                items
                    .iter()
                    .map(|item| self.select(&set, child_ty, item))
                    .collect(),
            ),
            (Some(_), Value::Null) => Value::Null,
            (Some(set), obj) => self.select(&set, child_ty, &obj),
            (None, v) => v,
        }
    }

    fn add_comment(&mut self, args: &Map<String, Value>) -> Value {
        let input = args.get("input").cloned().unwrap_or(Value::Null);
        let subject = input["subjectId"].as_str().unwrap_or("").to_string();
        let body = input["body"].as_str().unwrap_or("").to_string();
        lock(&self.shared.graphql_comments)
            .entry(subject)
            .or_default()
            .push(body.clone());
        json!({
            "clientMutationId": input.get("clientMutationId").cloned().unwrap_or(Value::Null),
            "commentEdge": { "node": { "body": body } },
        })
    }
}

/// The type of a nested field of the slice, by its name.
fn child_type(field: &str) -> &'static str {
    match field {
        "nodes" | "node" => "Issue",
        "edges" => "Edge",
        "pageInfo" => "PageInfo",
        "commentEdge" => "CommentEdge",
        "owner" => "User",
        _ => "Scalar",
    }
}

/// A page of `kind` (`issues` or `pullRequests`) of `total` items, newest first, from
/// the cursor `after` (an opaque base64 of the position, as GitHub's are).
fn connection(repo: &Value, kind: &str, total: u64, args: &Map<String, Value>) -> Value {
    let first = args
        .get("first")
        .and_then(Value::as_u64)
        .unwrap_or(30)
        .min(MAX_FIRST);
    let start = args
        .get("after")
        .and_then(Value::as_str)
        .and_then(decode_cursor)
        .unwrap_or(0);
    let end = (start + first).min(total);
    let items: Vec<Value> = (start..end).map(|i| issue(repo, kind, total - i)).collect();
    let edges: Vec<Value> = (start..end)
        .zip(items.iter())
        .map(|(i, node)| json!({ "cursor": cursor(i + 1), "node": node }))
        .collect();
    json!({
        "totalCount": total,
        "nodes": items,
        "edges": edges,
        "pageInfo": {
            "hasNextPage": end < total,
            "hasPreviousPage": start > 0,
            "startCursor": (start < end).then(|| cursor(start + 1)),
            "endCursor": (start < end).then(|| cursor(end)),
        },
    })
}

fn issue(repo: &Value, kind: &str, number: u64) -> Value {
    let owner = repo["owner"].as_str().unwrap_or("");
    let name = repo["name"].as_str().unwrap_or("");
    let what = if kind == "issues" {
        "Issue"
    } else {
        "Pull request"
    };
    json!({
        "id": format!("I_{owner}/{name}#{number}"),
        "number": number,
        "title": format!("{what} {number} of {owner}/{name}"),
        "state": "OPEN",
    })
}

fn cursor(position: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("cursor:v2:{position}"))
}

fn decode_cursor(c: &str) -> Option<u64> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(c).ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("cursor:v2:")?
        .parse()
        .ok()
}
