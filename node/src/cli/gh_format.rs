//! What `gh api` prints and sends, so that `ghmesh api` matches it: `--paginate`'s
//! page size and how pages are joined, `-i`'s status line and headers, and `--cache`'s
//! durations (gh's own rules, read from its source).

use std::time::Duration;

use bytes::Bytes;

use super::CliError;

/// A duration as gh (Go's `time.ParseDuration`) writes it: a sequence of numbers with
/// units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h` (`90s`, `1h30m`, `1.5h`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, CliError> {
    let bad = || {
        CliError::usage(format!(
            "bad --cache '{text}': use a duration such as 3600s, 60m or 1h30m"
        ))
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * seconds_per;
        rest = &rest[unit_len..];
    }
    if !(total.is_finite() && total <= 366.0 * 86400.0) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Adds `per_page=100` unless the request names a page size (gh does the same for
/// `--paginate`: fewer, larger pages).
pub(crate) fn with_per_page(path_and_query: &str) -> String {
    let query = path_and_query.split_once('?').map(|(_, q)| q).unwrap_or("");
    let chosen = query.split('&').any(|p| {
        p.split_once('=')
            .is_some_and(|(k, v)| k == "per_page" && !v.is_empty())
    });
    if chosen {
        return path_and_query.to_string();
    }
    let sep = if path_and_query.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{path_and_query}{sep}per_page=100")
}

/// Pages of a JSON array joined into one array byte for byte, as gh joins them: every
/// item keeps GitHub's key order and number formatting.
pub(crate) fn join_array_pages(pages: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pages.iter().map(|p| p.len()).sum());
    let last = pages.len().saturating_sub(1);
    for (i, page) in pages.iter().enumerate() {
        let mut b = page.trim_ascii();
        if i > 0 {
            if let Some(rest) = b.strip_prefix(b"[") {
                out.push(if rest.trim_ascii_start().starts_with(b"]") {
                    b' '
                } else {
                    b','
                });
                b = rest;
            }
        }
        if i < last {
            b = b.strip_suffix(b"]").unwrap_or(b);
        }
        out.extend_from_slice(b);
    }
    out
}

/// A header name as gh (Go's net/http) prints it: `X-Ghmesh-Cache`.
fn canonical_header(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

/// `-i` output: the status line, then the headers sorted by name (repeated names
/// joined with ", "), then a blank line, as `gh api -i` prints them.
pub(crate) fn include_block(status: u16, headers: &[(String, String)]) -> String {
    let mut by_name: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for (k, v) in headers {
        by_name.entry(canonical_header(k)).or_default().push(v);
    }
    let mut out = format!("HTTP/1.1 {status} {}\n", reason(status));
    for (name, values) in by_name {
        out.push_str(&format!("{name}: {}\r\n", values.join(", ")));
    }
    out.push_str("\r\n");
    out
}

pub(crate) fn reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_like_gh() {
        assert_eq!(
            with_per_page("/repos/o/r/issues"),
            "/repos/o/r/issues?per_page=100"
        );
        assert_eq!(
            with_per_page("/repos/o/r/issues?state=all"),
            "/repos/o/r/issues?state=all&per_page=100"
        );
        assert_eq!(with_per_page("/x?per_page=30"), "/x?per_page=30");
        let pages = [
            Bytes::from_static(br#"[{"z":1,"a":2.50}]"#),
            Bytes::from_static(br#"[{"b":3}, {"c":4}]"#),
            Bytes::from_static(br#"[{"d":5}]"#),
        ];
        assert_eq!(
            String::from_utf8(join_array_pages(&pages)).unwrap(),
            r#"[{"z":1,"a":2.50},{"b":3}, {"c":4},{"d":5}]"#,
            "GitHub's bytes: key order and number formatting kept"
        );
        let with_empty_last = [Bytes::from_static(b"[1]"), Bytes::from_static(b"[]")];
        let joined = join_array_pages(&with_empty_last);
        let v: serde_json::Value = serde_json::from_slice(&joined).unwrap();
        assert_eq!(v, serde_json::json!([1]));
    }

    #[test]
    fn durations_like_go() {
        assert_eq!(parse_duration("3600s").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("60m").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "10", "1d", "h", "1h-", "9999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn include_like_gh() {
        let h = vec![
            ("x-ghmesh-cache".to_string(), "hit".to_string()),
            ("content-type".to_string(), "application/json".to_string()),
            ("etag".to_string(), "\"a\"".to_string()),
            ("vary".to_string(), "Accept".to_string()),
            ("vary".to_string(), "Authorization".to_string()),
        ];
        assert_eq!(
            include_block(200, &h),
            "HTTP/1.1 200 OK\nContent-Type: application/json\r\nEtag: \"a\"\r\nVary: Accept, Authorization\r\nX-Ghmesh-Cache: hit\r\n\r\n"
        );
    }
}
