//! `--jq EXPR` support for `ghmesh api`, mirroring `gh api --jq`.
//!
//! Filters are evaluated with jaq (a Rust jq clone); output formatting follows
//! go-gh's `jq.Evaluate`, which is what `gh api --jq` uses when stdout is not a
//! terminal.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use jaq_core::data::JustLut;
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{compile, Compiler, Ctx, Vars};
use jaq_json::{Num, Val};
use serde_json::{Map, Number, Value};

use super::jq_render::{render_json, render_top};

/// Errors from compiling or running a `--jq` expression.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JqError {
    /// The expression does not parse or names something undefined.
    #[error("invalid jq expression: {0}")]
    Compile(String),
    /// The expression failed on this input.
    #[error("jq: {0}")]
    Runtime(String),
    /// The body to filter is not JSON.
    #[error("response is not JSON: {0}")]
    NotJson(String),
}

type Data = JustLut<Val>;

/// Stack for the thread that runs a filter. Only touched pages are committed,
/// so this is address space rather than memory.
const RUN_STACK_SIZE: usize = 256 * 1024 * 1024;

/// Definitions layered over jaq's standard library to match gojq, the jq
/// implementation inside gh. Later definitions shadow earlier ones.
///
/// - `halt_error`: jaq writes to the process's stderr and halts; gh reports the
///   value as the command's error, and a library must not write to stderr.
/// - `env`: jaq's version panics when the environment holds non-UTF-8 text.
/// - `input`/`inputs`: jaq needs input-stream plumbing for these; gh runs the
///   filter on a single value, so there never is a further input.
/// - `repeat`, `join`: jaq deviates from jq here (`repeat(f)` yields `f, f, ...`
///   instead of `., f, f|f, ...`; `join` prints `null` instead of skipping it).
/// - `@csv`, `@tsv`, `IN`, `INDEX`, `tostream`, `leaf_paths`, `toarray`,
///   `input_filename`: part of jq/gojq but absent from jaq's standard library.
const OVERRIDES: &str = r#"
def halt_error: if isstring then error(.) else error(tojson) end;
def halt_error($exit_code): halt_error;
def env: $ENV;
def input: error("No more inputs");
def inputs: empty;
def input_filename: null;
def repeat(f): def rec: ., (f | rec); rec;
def join($sep):
  reduce .[] as $x (null;
    (if . == null then "" else . + $sep end) +
    ($x | if . == null then "" elif isstring then . elif isnumber or isboolean then tojson
          else error("cannot join with \(type)") end)
  ) // "";
def @csv:
  if isarray then
    map(if isstring then "\"" + (split("\"") | join("\"\"")) + "\""
        elif isnumber or isboolean then tojson
        elif . == null then ""
        else error("\(type) (\(tojson)) is not valid in a csv row") end)
    | join(",")
  else error("\(type) (\(tojson)) cannot be csv-formatted, only an array can be") end;
def @tsv:
  if isarray then
    map(if isstring then
          split("\\") | join("\\\\") | split("\t") | join("\\t")
          | split("\n") | join("\\n") | split("\r") | join("\\r")
        elif isnumber or isboolean then tojson
        elif . == null then ""
        else error("\(type) (\(tojson)) is not valid in a tsv row") end)
    | join("\t")
  else error("\(type) (\(tojson)) cannot be tsv-formatted, only an array can be") end;
def IN(s): any(s == .; .);
def IN(src; s): any(src == s; .);
def INDEX(stream; idx_expr): reduce stream as $row ({}; .[$row | idx_expr | tostring] |= $row);
def INDEX(idx_expr): INDEX(.[]; idx_expr);
def leaf_paths: paths(scalars);
def toarray: if isarray then . else [.] end;
def tostream:
  path(def r: (.[]? | r), .; r) as $p
  | getpath($p)
  | reduce path(.[]?) as $q ([$p, .]; [$p + $q]);
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
        on_big_stack(|| compile_filter(expr)).unwrap_or_else(|| {
            Err(JqError::Compile(
                "internal error in the jq engine".to_owned(),
            ))
        })
    }

    /// Runs the filter on `input`, returning every output value in order.
    pub fn run(&self, input: &Value) -> Result<Vec<Value>, JqError> {
        on_big_stack(|| self.run_inner(input)).unwrap_or_else(|| Err(internal_error()))
    }

    /// Output lines exactly as `gh api --jq` prints: a string result printed raw (no quotes), anything else as compact JSON, one line per result.
    ///
    /// Like gh, `null` prints as an empty line, a non-integral top-level number
    /// prints with two decimals, and JSON has object keys sorted and `<`, `>`,
    /// `&` escaped. Every line, including the last, ends in `\n`.
    pub fn render(&self, input: &Value) -> Result<String, JqError> {
        // Formatting (and dropping) nested values recurses too, so it stays
        // on the big stack.
        on_big_stack(|| {
            let mut out = String::new();
            for value in self.run_inner(input)? {
                render_top(&mut out, &value);
                out.push('\n');
            }
            Ok(out)
        })
        .unwrap_or_else(|| Err(internal_error()))
    }

    fn run_inner(&self, input: &Value) -> Result<Vec<Value>, JqError> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([env_val()]));
        let mut outputs = Vec::new();
        for item in self.filter.id.run((ctx, from_json(input))) {
            match item {
                Ok(v) => outputs.push(to_json(&v, 0)?),
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

/// Runs `f` on a thread with a [`RUN_STACK_SIZE`] stack; `None` if it panicked.
///
/// jaq recurses on the native stack (parsing nested expressions, building and
/// dropping nested values, recursive jq functions), so deep but legitimate
/// programs can overflow a small stack such as an async runtime worker's, and
/// a stack overflow aborts the whole process. A dedicated thread gets a known,
/// generous stack, and joining it turns a panic in jaq into an error.
fn on_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
    // The slot lets the caller's thread run `f` itself if spawning fails.
    let slot = Mutex::new(Some(f));
    let guarded = || {
        let f = slot.lock().ok().and_then(|mut f| f.take())?;
        catch_unwind(AssertUnwindSafe(f)).ok()
    };
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("jq".to_owned())
            .stack_size(RUN_STACK_SIZE)
            .spawn_scoped(scope, guarded);
        match spawned {
            Ok(handle) => handle.join().ok().flatten(),
            // Strict overcommit can refuse the reservation; the current stack
            // still copes with everything but extreme nesting.
            Err(_) => guarded(),
        }
    })
}

fn internal_error() -> JqError {
    JqError::Runtime("internal error in the jq engine".to_owned())
}

fn compile_filter(expr: &str) -> Result<JqFilter, JqError> {
    let overrides = load::parse(OVERRIDES, |p| p.defs()).ok_or_else(|| {
        JqError::Compile("internal error: built-in definitions do not parse".to_owned())
    })?;
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
    // `std::env::vars` panics on non-UTF-8 entries.
    let map = std::env::vars_os()
        .map(|(k, v)| {
            let k = k.to_string_lossy().into_owned();
            let v = v.to_string_lossy().into_owned();
            (Val::from(k), Val::from(v))
        })
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
                    let at = at(expr, found);
                    // The lexer reports the whole rest of the input; only
                    // its first character is the culprit.
                    let found = found.chars().next().map_or_else(
                        || "end of expression".to_owned(),
                        |c| format!("{:?}", c.to_string()),
                    );
                    msgs.push(match expect {
                        // `Expect::as_str` panics on delimiters it does not know.
                        load::lex::Expect::Delim(open) => {
                            let opened = line_col(expr, open)
                                .map(|(l, c)| format!(" opened at line {l}, column {c}"))
                                .unwrap_or_default();
                            format!("unclosed {open:?}{opened}, found {found}{at}")
                        }
                        load::lex::Expect::Token => format!("unexpected {found}{at}"),
                        other => format!("expected {}, found {found}{at}", other.as_str()),
                    });
                }
            }
            load::Error::Parse(errs) => {
                for (expect, found) in errs {
                    let expected = match expect {
                        load::parse::Expect::Nothing => "end of expression",
                        other => other.as_str(),
                    };
                    msgs.push(format!(
                        "unexpected {}, expected {expected}{}",
                        describe_found(found),
                        at(expr, found)
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
            format!("undefined {} {what}{}", undefined.as_str(), at(expr, name))
        })
        .collect();
    join_or(msgs, "could not compile expression")
}

/// Quotes the start of the offending source text; a parse error's token can be
/// a whole bracketed block, which is too long to repeat in full.
fn describe_found(found: &str) -> String {
    let mut chars = found.chars();
    let head: String = chars.by_ref().take(20).collect();
    match (head.is_empty(), chars.next().is_some()) {
        (true, _) => "end of expression".to_owned(),
        (false, false) => format!("{head:?}"),
        (false, true) => format!("{:?}", head + "..."),
    }
}

fn join_or(msgs: Vec<String>, fallback: &str) -> String {
    if msgs.is_empty() {
        fallback.to_owned()
    } else {
        msgs.join("; ")
    }
}

/// " at line L, column C" for a slice that jaq reports out of `expr`.
fn at(expr: &str, part: &str) -> String {
    line_col(expr, part)
        .map(|(line, column)| format!(" at line {line}, column {column}"))
        .unwrap_or_default()
}

/// 1-based line and column where `part` starts within `expr`, or `None` if it
/// does not point into `expr` (an error in the built-in definitions).
fn line_col(expr: &str, part: &str) -> Option<(usize, usize)> {
    // jaq's own `span` helper underflows on slices from other strings, so the
    // pointer arithmetic is redone with checks.
    let offset = (part.as_ptr() as usize).checked_sub(expr.as_ptr() as usize)?;
    let before = expr.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    Some((line, column))
}

/// How many characters of a long runtime error message to keep from its start
/// and from its end.
const ERROR_HEAD_CHARS: usize = 200;
const ERROR_TAIL_CHARS: usize = 60;

fn error_message(err: jaq_json::Error) -> String {
    // jaq's messages embed the offending value in full, which for an API
    // response can be megabytes; jq and gojq abbreviate it too. The end is
    // kept because it often says what was expected ("... as string").
    let msg = full_error_message(err);
    let len = msg.chars().count();
    if len <= ERROR_HEAD_CHARS + ERROR_TAIL_CHARS {
        return msg;
    }
    let head: String = msg.chars().take(ERROR_HEAD_CHARS).collect();
    let tail: String = msg.chars().skip(len - ERROR_TAIL_CHARS).collect();
    format!("{head} ... {tail}")
}

fn full_error_message(err: jaq_json::Error) -> String {
    match err.into_val() {
        Val::TStr(s) | Val::BStr(s) => String::from_utf8_lossy(&s).into_owned(),
        // Same wording as jq 1.7 for `error(non-string)`.
        other => {
            let mut out = String::new();
            match to_json(&other, 0) {
                Ok(json) => render_json(&mut out, &json),
                Err(e) => out = e.to_string(),
            }
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
        Value::Object(o) => {
            // gojq iterates objects in key order (`.[]`, `to_entries`, ...);
            // serde_json keeps insertion order if its `preserve_order` feature
            // is on anywhere in the build.
            let mut entries: Vec<_> = o.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            Val::obj(
                entries
                    .into_iter()
                    .map(|(k, v)| (Val::from(k.clone()), from_json(v)))
                    .collect(),
            )
        }
    }
}

/// Deepest nesting of an output value. jq stops printing at the same depth;
/// beyond it, merely dropping the value on a caller's ordinary stack could
/// overflow it.
const MAX_OUTPUT_DEPTH: usize = 10_000;

fn to_json(v: &Val, depth: usize) -> Result<Value, JqError> {
    if depth > MAX_OUTPUT_DEPTH {
        return Err(JqError::Runtime(format!(
            "output nested more than {MAX_OUTPUT_DEPTH} levels deep"
        )));
    }
    Ok(match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => num_to_json(n),
        Val::TStr(s) | Val::BStr(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
        Val::Arr(a) => Value::Array(
            a.iter()
                .map(|v| to_json(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, v)| Ok((key_to_string(k, depth)?, to_json(v, depth + 1)?)))
                .collect::<Result<Map<_, _>, JqError>>()?,
        ),
    })
}

fn key_to_string(k: &Val, depth: usize) -> Result<String, JqError> {
    Ok(match k {
        Val::TStr(s) | Val::BStr(s) => String::from_utf8_lossy(s).into_owned(),
        // jaq permits non-string keys; JSON does not, so use their JSON text.
        other => {
            let mut out = String::new();
            render_json(&mut out, &to_json(other, depth + 1)?);
            out
        }
    })
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

/// Parses an API response body into the input for [`JqFilter::run`] and
/// [`JqFilter::render`].
pub fn parse_body(body: &[u8]) -> Result<Value, JqError> {
    serde_json::from_slice(body).map_err(|e| JqError::NotJson(e.to_string()))
}
