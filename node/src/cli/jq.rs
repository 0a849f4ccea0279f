//! `--jq EXPR` support for `ghmesh api`, mirroring `gh api --jq`.
//!
//! Filters are evaluated with jaq (a Rust jq clone); output formatting follows
//! go-gh's `jq.Evaluate`, which is what `gh api --jq` uses when stdout is not a
//! terminal.

use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};

use jaq_core::data::JustLut;
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{compile, Compiler, Ctx, Vars};
use jaq_json::{Num, Val};
use serde_json::{Map, Number, Value};

/// Errors from compiling or running a `--jq` expression.
#[derive(Debug, thiserror::Error)]
pub enum JqError {
    #[error("invalid jq expression: {0}")]
    Compile(String),
    #[error("jq: {0}")]
    Runtime(String),
    #[error("response is not JSON: {0}")]
    NotJson(String),
}

type Data = JustLut<Val>;

/// Stack for the thread that runs a filter. Only touched pages are committed,
/// so this is address space rather than memory.
const RUN_STACK_SIZE: usize = 256 * 1024 * 1024;

/// Definitions layered over jaq's standard library. Later definitions shadow
/// earlier ones, so these replace jaq's versions.
///
/// - jaq's `halt_error` writes to the process's stderr and then halts; gh
///   instead reports the value as the command's error, and a library must not
///   write to stderr behind its caller's back.
/// - `input`/`inputs` need jaq's input-stream plumbing; gh runs the filter on a
///   single value, so there never is a further input.
const OVERRIDES: &str = r#"
def halt_error($exit_code): error(.);
def halt_error: error(.);
def input: error("No more inputs");
def inputs: empty;
"#;

/// Compiles once, runs on many inputs (pagination runs it per page).
pub struct JqFilter {
    filter: jaq_core::Filter<Data>,
}

impl std::fmt::Debug for JqFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The compiled lookup table is large and meaningless to a reader.
        f.debug_struct("JqFilter").finish_non_exhaustive()
    }
}

impl JqFilter {
    /// Parses and compiles `expr` together with jq's standard library
    /// (`map`, `select`, `length`, `keys`, `join`, `test`, ...).
    pub fn compile(expr: &str) -> Result<Self, JqError> {
        // jaq is not ours to audit; a panic in it must surface as an error
        // rather than take down the whole command.
        catch_unwind(AssertUnwindSafe(|| compile_filter(expr))).unwrap_or_else(|_| {
            Err(JqError::Compile(
                "internal error in the jq engine while compiling".to_owned(),
            ))
        })
    }

    /// Runs the filter on `input`, returning every output value in order.
    pub fn run(&self, input: &Value) -> Result<Vec<Value>, JqError> {
        // jaq recurses on the native stack (for nested values as well as for
        // recursive jq functions), so deep but legitimate programs can
        // overflow a small stack such as an async runtime worker's, and a
        // stack overflow aborts the process. A dedicated thread gets a known,
        // generous stack; its join also turns a panic in jaq into an error.
        let internal = || JqError::Runtime("internal error in the jq engine".to_owned());
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("jq".to_owned())
                .stack_size(RUN_STACK_SIZE)
                .spawn_scoped(scope, || self.run_inner(input))
                .map_err(|e| JqError::Runtime(format!("cannot start jq thread: {e}")))?
                .join()
                .unwrap_or_else(|_| Err(internal()))
        })
    }

    /// Output lines exactly as `gh api --jq` prints: a string result printed raw (no quotes), anything else as compact JSON, one line per result.
    ///
    /// Like gh, `null` prints as an empty line, a non-integral top-level number
    /// prints with two decimals, and JSON has object keys sorted and `<`, `>`,
    /// `&` escaped. Every line, including the last, ends in `\n`.
    pub fn render(&self, input: &Value) -> Result<String, JqError> {
        let mut out = String::new();
        for value in self.run(input)? {
            render_top(&mut out, &value);
            out.push('\n');
        }
        Ok(out)
    }

    fn run_inner(&self, input: &Value) -> Result<Vec<Value>, JqError> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([env_val()]));
        let mut outputs = Vec::new();
        for item in self.filter.id.run((ctx, from_json(input))) {
            match item {
                Ok(v) => outputs.push(to_json(&v)),
                Err(exn) => match exn.get_err() {
                    Ok(err) => return Err(JqError::Runtime(error_message(err))),
                    // gh treats `halt` as a normal end of output; we must not
                    // let jaq's `unwrap_valr` exit the process.
                    Err(exn) => match exn.get_halt() {
                        Ok(_exit_code) => break,
                        Err(_) => {
                            return Err(JqError::Runtime(
                                "internal error: unexpected control flow".to_owned(),
                            ));
                        }
                    },
                },
            }
        }
        Ok(outputs)
    }
}

fn compile_filter(expr: &str) -> Result<JqFilter, JqError> {
    let overrides = load::parse(OVERRIDES, |p| p.defs()).unwrap_or_default();
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs())
        .chain(overrides);
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());

    let arena = Arena::default();
    let program = File {
        code: expr,
        path: (),
    };
    let modules = Loader::new(defs)
        .load(&arena, program)
        .map_err(|errs| JqError::Compile(load_errors(expr, errs)))?;
    let filter = Compiler::default()
        .with_funs(funs)
        .with_global_vars(["$ENV"])
        .compile(modules)
        .map_err(|errs| JqError::Compile(undefined_errors(expr, errs)))?;
    Ok(JqFilter { filter })
}

/// `$ENV`, which gojq (and so gh) provides alongside `env`.
fn env_val() -> Val {
    let map = std::env::vars()
        .map(|(k, v)| (Val::from(k), Val::from(v)))
        .collect();
    Val::obj(map)
}

fn load_errors(expr: &str, errs: load::Errors<&str, ()>) -> String {
    let mut msgs = Vec::new();
    for (_file, err) in errs {
        match err {
            load::Error::Io(errs) => {
                for (path, e) in errs {
                    msgs.push(format!("cannot load module {path:?}: {e}"));
                }
            }
            load::Error::Lex(errs) => {
                for (expect, found) in errs {
                    let expected = match expect {
                        // `as_str` panics on delimiters it does not know.
                        load::lex::Expect::Delim(open) => format!("closing delimiter for {open:?}"),
                        other => other.as_str().to_owned(),
                    };
                    let snippet = found
                        .chars()
                        .next()
                        .map_or_else(|| "end of expression".to_owned(), |c| format!("{c:?}"));
                    msgs.push(format!(
                        "expected {expected}, found {snippet}{}",
                        position(expr, found)
                    ));
                }
            }
            load::Error::Parse(errs) => {
                for (expect, found) in errs {
                    let found_desc = if found.is_empty() {
                        "end of expression".to_owned()
                    } else {
                        format!("{found:?}")
                    };
                    msgs.push(format!(
                        "unexpected {found_desc}, expected {}{}",
                        expect.as_str(),
                        position(expr, found)
                    ));
                }
            }
        }
    }
    join_or(msgs, "could not parse expression")
}

fn undefined_errors(expr: &str, errs: compile::Errors<&str, ()>) -> String {
    let msgs = errs
        .into_iter()
        .flat_map(|(_file, errs)| errs)
        .map(|(name, undefined)| {
            let what = match &undefined {
                compile::Undefined::Filter(arity) => format!("{name}/{arity}"),
                _ => name.to_owned(),
            };
            format!(
                "undefined {} {what}{}",
                undefined.as_str(),
                position(expr, name)
            )
        })
        .collect();
    join_or(msgs, "could not compile expression")
}

fn join_or(msgs: Vec<String>, fallback: &str) -> String {
    if msgs.is_empty() {
        fallback.to_owned()
    } else {
        msgs.join("; ")
    }
}

/// " at line L, column C" for a slice that jaq reports out of `expr`, or
/// nothing if the slice does not point into `expr` (errors in the prelude).
fn position(expr: &str, part: &str) -> String {
    // jaq's own `span` helper underflows on slices from other strings, so the
    // pointer arithmetic is redone with checks.
    let offset = (part.as_ptr() as usize).checked_sub(expr.as_ptr() as usize);
    let Some(offset) = offset.filter(|&o| o <= expr.len() && expr.is_char_boundary(o)) else {
        return String::new();
    };
    let before = &expr[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    format!(" at line {line}, column {column}")
}

fn error_message(err: jaq_json::Error) -> String {
    match err.into_val() {
        Val::TStr(s) | Val::BStr(s) => String::from_utf8_lossy(&s).into_owned(),
        // Same wording as jq 1.7 for `error(non-string)`.
        other => {
            let mut out = String::new();
            render_json(&mut out, &to_json(&other));
            format!("{out} (not a string)")
        }
    }
}

fn from_json(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(if let Some(i) = n.as_i64() {
            Num::from_integral(i)
        } else if let Some(u) = n.as_u64() {
            Num::from_integral(u)
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Val::from(s.clone()),
        Value::Array(a) => a.iter().map(from_json).collect(),
        Value::Object(o) => Val::obj(
            o.iter()
                .map(|(k, v)| (Val::from(k.clone()), from_json(v)))
                .collect(),
        ),
    }
}

fn to_json(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => num_to_json(n),
        Val::TStr(s) | Val::BStr(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
        Val::Arr(a) => Value::Array(a.iter().map(to_json).collect()),
        Val::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (key_to_string(k), to_json(v)))
                .collect::<Map<_, _>>(),
        ),
    }
}

fn key_to_string(k: &Val) -> String {
    match k {
        Val::TStr(s) | Val::BStr(s) => String::from_utf8_lossy(s).into_owned(),
        // jaq permits non-string keys; JSON does not, so use their JSON text.
        other => {
            let mut out = String::new();
            render_json(&mut out, &to_json(other));
            out
        }
    }
}

fn num_to_json(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::from(*i as i64),
        Num::BigInt(b) => b
            .to_string()
            .parse::<Number>()
            .map_or(Value::Null, Value::Number),
        Num::Float(f) => float_to_json(*f),
        Num::Dec(s) => float_to_json(s.parse().unwrap_or(f64::NAN)),
    }
}

fn float_to_json(f: f64) -> Value {
    // jq semantics: NaN prints as null, infinities clamp to the largest finite
    // double.
    let f = if f.is_nan() {
        return Value::Null;
    } else if f.is_infinite() {
        f64::MAX.copysign(f)
    } else {
        f
    };
    // Division and friends yield floats even for whole results; jq, gojq and gh
    // all print those as integers, and callers of `run` should see the same.
    if f.fract() == 0.0 && f.abs() < 9.2e18 {
        return Value::from(f as i64);
    }
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// go-gh's `jsonScalarToString`, falling back to `json.Marshal`.
fn render_top(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => {
                let _ = write!(out, "{i}");
            }
            (_, Some(u), _) => {
                let _ = write!(out, "{u}");
            }
            (_, _, Some(f)) if f.fract() == 0.0 => {
                let _ = write!(out, "{f:.0}");
            }
            (_, _, Some(f)) => {
                let _ = write!(out, "{f:.2}");
            }
            _ => render_json(out, v),
        },
        Value::Array(_) | Value::Object(_) => render_json(out, v),
    }
}

/// Compact JSON as Go's `json.Marshal` writes a decoded value: object keys
/// sorted, HTML-sensitive characters escaped, Go's float formatting.
fn render_json(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => {
                let _ = write!(out, "{i}");
            }
            (_, Some(u), _) => {
                let _ = write!(out, "{u}");
            }
            (_, _, Some(f)) => go_float(out, f),
            _ => {
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
