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
    let cursor = end_cursor(page)?;
    let mut next = sent.clone();
    let variables = next
        .entry("variables")
        .or_insert_with(|| Value::Object(Map::new()));
    variables
        .as_object_mut()?
        .insert("endCursor".into(), Value::String(cursor));
    Some(Bytes::from(Value::Object(next).to_string()))
}

/// As gh finds it: the first `pageInfo` in the document's own order decides; its
/// `endCursor` when it `hasNextPage`, else there is no next page. (A parsed
/// `serde_json::Value` keeps keys sorted, not in order: the page is walked as it
/// streams.)
fn end_cursor(page: &[u8]) -> Option<String> {
    let mut de = serde_json::Deserializer::from_slice(page);
    let found = serde::de::DeserializeSeed::deserialize(FirstPageInfo, &mut de).ok()??;
    found.has_next_page.filter(|more| *more)?;
    found.end_cursor
}

#[derive(serde::Deserialize)]
struct PageInfo {
    #[serde(rename = "hasNextPage")]
    has_next_page: Option<bool>,
    #[serde(rename = "endCursor")]
    end_cursor: Option<String>,
}

/// Walks any JSON value for the first `pageInfo` object, in document order.
struct FirstPageInfo;

impl<'de> serde::de::DeserializeSeed<'de> for FirstPageInfo {
    type Value = Option<PageInfo>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FirstPageInfo {
    type Value = Option<PageInfo>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a GraphQL answer")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if found.is_some() {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else if key == "pageInfo" {
                found = map.next_value::<Option<PageInfo>>()?;
            } else {
                found = map.next_value_seed(FirstPageInfo)?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(item) = seq.next_element_seed(FirstPageInfo)? {
            found = found.or(item);
        }
        Ok(found)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
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
        // The first pageInfo in the document decides, as in gh: here the outer
        // connection is done, so paging stops though an inner one has more (a sorted
        // walk would find "comments" before "pageInfo" and follow it).
        let nested = br#"{"data":{"repository":{"pullRequests":{"pageInfo":{"hasNextPage":false,"endCursor":"outer"},"nodes":[{"comments":{"pageInfo":{"hasNextPage":true,"endCursor":"inner"}}}]}}}}"#;
        assert!(next_page(&sent, nested).is_none());
        let outer_more = br#"{"data":{"x":{"pageInfo":{"endCursor":"o2","hasNextPage":true},"a":{"pageInfo":{"hasNextPage":true,"endCursor":"i"}}}}}"#;
        let next: Value = serde_json::from_slice(&next_page(&sent, outer_more).unwrap()).unwrap();
        assert_eq!(next["variables"]["endCursor"], "o2");
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
