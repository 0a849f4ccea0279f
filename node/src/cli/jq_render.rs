//! How `gh api --jq` prints values: go-gh's `jq.Evaluate` output rules (top-level
//! strings raw, everything else as compact JSON with Go's float and string escaping).

use std::fmt::Write as _;

use serde_json::{Number, Value};

/// Writes `n` if it is an integer (both renderings print integers the same way).
fn write_integer(out: &mut String, n: &Number) -> bool {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else {
        return false;
    }
    true
}

/// go-gh's `jsonScalarToString`, falling back to `json.Marshal`.
pub(crate) fn render_top(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if write_integer(out, n) => {}
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 => {
                let _ = write!(out, "{f:.0}");
            }
            Some(f) => {
                let _ = write!(out, "{f:.2}");
            }
            None => render_json(out, v),
        },
        Value::Array(_) | Value::Object(_) => render_json(out, v),
    }
}

/// Compact JSON as Go's `json.Marshal` writes a decoded value: object keys
/// sorted, HTML-sensitive characters escaped, Go's float formatting.
pub(crate) fn render_json(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if write_integer(out, n) => {}
        Value::Number(n) => match n.as_f64() {
            Some(f) => go_float(out, f),
            None => {
                let _ = write!(out, "{n}");
            }
        },
        Value::String(s) => go_string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render_json(out, item);
            }
            out.push(']');
        }
        Value::Object(o) => {
            // serde_json may preserve insertion order (feature unification);
            // Go always sorts map keys.
            let mut entries: Vec<_> = o.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_string(out, k);
                out.push(':');
                render_json(out, item);
            }
            out.push('}');
        }
    }
}

/// Go's `encoding/json` float encoding: shortest round-trip digits, fixed
/// notation for 1e-6 <= |f| < 1e21, otherwise exponent with explicit sign.
fn go_float(out: &mut String, f: f64) {
    let abs = f.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        let _ = write!(out, "{f}");
    } else {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => {
                let _ = write!(out, "{mantissa}e+{exp}");
            }
            _ => out.push_str(&s),
        }
    }
}

/// Go's `encoding/json` string encoding with its default HTML escaping.
fn go_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
