//! `ghmesh api graphql`, as `gh api graphql`: fields become the query's variables
//! (`query` and `operationName` stay beside them), `--paginate` follows
//! `pageInfo { hasNextPage endCursor }` through `$endCursor`, and an answer with
//! `errors` is printed and then fails the command.

use bytes::Bytes;
use serde_json::{Map, Value};

/// The JSON body gh sends for these fields: `query` and `operationName` at the top,
/// every other field under `variables` (keys sorted, as Go's encoder writes a map).
pub fn body(params: Vec<(String, Value)>) -> Map<String, Value> {
    let mut top = Map::new();
    let mut variables = Map::new();
    for (k, v) in params {
        if k == "query" || k == "operationName" {
            top.insert(k, v);
        } else {
            variables.insert(k, v);
        }
    }
    if !variables.is_empty() {
        top.insert("variables".into(), Value::Object(variables));
    }
    top
}

/// The body for the page after `page`: the same query with `$endCursor` set to the
/// cursor `page` ends at; `None` when `page` is the last.
pub fn next_page(sent: &Map<String, Value>, page: &[u8]) -> Option<Bytes> {
    let page: Value = serde_json::from_slice(page).ok()?;
    let cursor = end_cursor(&page)?;
    let mut next = sent.clone();
    let variables = next
        .entry("variables")
        .or_insert_with(|| Value::Object(Map::new()));
    variables
        .as_object_mut()?
        .insert("endCursor".into(), Value::String(cursor));
    Some(Bytes::from(Value::Object(next).to_string()))
}

/// The `endCursor` of the first `pageInfo` that has a next page.
fn end_cursor(v: &Value) -> Option<String> {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(info)) = map.get("pageInfo") {
                if info.get("hasNextPage") == Some(&Value::Bool(true)) {
                    if let Some(Value::String(c)) = info.get("endCursor") {
                        return Some(c.clone());
                    }
                }
            }
            map.values().find_map(end_cursor)
        }
        Value::Array(items) => items.iter().find_map(end_cursor),
        _ => None,
    }
}

/// The messages of an answer's `errors`, as gh reports them (`None`: no errors).
pub fn errors(page: &[u8]) -> Option<String> {
    let page: Value = serde_json::from_slice(page).ok()?;
    let errors = page.get("errors")?.as_array().filter(|e| !e.is_empty())?;
    let messages: Vec<&str> = errors
        .iter()
        .map(|e| e.get("message").and_then(Value::as_str).unwrap_or("error"))
        .collect();
    Some(format!("GraphQL: {}", messages.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_become_variables_as_gh_sends_them() {
        let b = body(vec![
            ("query".into(), json!("query($n: Int!) { x(n: $n) }")),
            ("owner".into(), json!("acme")),
            ("n".into(), json!(5)),
            ("operationName".into(), json!("Q")),
        ]);
        assert_eq!(
            Value::Object(b).to_string(),
            r#"{"operationName":"Q","query":"query($n: Int!) { x(n: $n) }","variables":{"n":5,"owner":"acme"}}"#
        );
        let only_query = body(vec![("query".into(), json!("{ x }"))]);
        assert_eq!(
            Value::Object(only_query).to_string(),
            r#"{"query":"{ x }"}"#
        );
    }

    #[test]
    fn pages_follow_the_end_cursor_of_the_first_connection_with_more() {
        let sent = body(vec![
            ("query".into(), json!("q")),
            ("owner".into(), json!("o")),
        ]);
        let more = br#"{"data":{"repository":{"issues":{"nodes":[],"pageInfo":{"hasNextPage":true,"endCursor":"Y3Vyc29yOjI="}}}}}"#;
        let next: Value = serde_json::from_slice(&next_page(&sent, more).unwrap()).unwrap();
        assert_eq!(next["variables"]["endCursor"], "Y3Vyc29yOjI=");
        assert_eq!(next["variables"]["owner"], "o");
        let last = br#"{"data":{"repository":{"issues":{"pageInfo":{"hasNextPage":false,"endCursor":"x"}}}}}"#;
        assert!(next_page(&sent, last).is_none());
        assert!(next_page(&sent, b"not json").is_none());
    }

    #[test]
    fn errors_are_reported_with_their_messages() {
        assert_eq!(errors(br#"{"data":{}}"#), None);
        assert_eq!(errors(br#"{"data":{},"errors":[]}"#), None);
        assert_eq!(
            errors(br#"{"errors":[{"message":"a"},{"message":"b"}]}"#).as_deref(),
            Some("GraphQL: a, b")
        );
    }
}
