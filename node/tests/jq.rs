#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
use ghmesh_node::cli::jq::{parse_body, JqError, JqFilter};
use serde_json::{json, Value};

fn render(expr: &str, input: Value) -> String {
    JqFilter::compile(expr)
        .unwrap()
        .render(&input)
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
}

fn run(expr: &str, input: Value) -> Vec<Value> {
    JqFilter::compile(expr).unwrap().run(&input).unwrap()
}

fn runtime_error(expr: &str, input: Value) -> String {
    match JqFilter::compile(expr).unwrap().run(&input) {
        Err(JqError::Runtime(msg)) => msg,
        other => panic!("{expr}: expected runtime error, got {other:?}"),
    }
}

fn compile_error(expr: &str) -> String {
    match JqFilter::compile(expr) {
        Err(JqError::Compile(msg)) => msg,
        other => panic!("{expr:?}: expected compile error, got {other:?}"),
    }
}

#[test]
fn string_result_is_raw() {
    assert_eq!(render(".name", json!({"name": "octocat"})), "octocat\n");
    assert_eq!(render(".s", json!({"s": "a \"q\"\nb"})), "a \"q\"\nb\n");
}

#[test]
fn iteration_gives_one_line_per_result() {
    let input = json!([{"id": 1}, {"id": 2}, {"id": 3}]);
    assert_eq!(render(".[].id", input.clone()), "1\n2\n3\n");
    assert_eq!(run(".[].id", input), vec![json!(1), json!(2), json!(3)]);
    assert_eq!(render("empty", json!(null)), "");
}

#[test]
fn std_library_filters() {
    let input = json!([{"n": 1, "x": "a"}, {"n": 2, "x": "b"}, {"n": 3, "x": "c"}]);
    assert_eq!(render("map(select(.n > 1)) | length", input.clone()), "2\n");
    assert_eq!(render("[.[] | .x] | join(\",\")", input.clone()), "a,b,c\n");
    assert_eq!(render("map(.n) | add", input.clone()), "6\n");
    assert_eq!(
        render("sort_by(-.n) | map(.x)", input),
        "[\"c\",\"b\",\"a\"]\n"
    );
    assert_eq!(render("keys", json!({"b": 1, "a": 2})), "[\"a\",\"b\"]\n");
    assert_eq!(
        render(".a | tostring", json!({"a": [1, "x"]})),
        "[1,\"x\"]\n"
    );
    assert_eq!(render(".a | tostring", json!({"a": 3})), "3\n");
    assert_eq!(
        render("to_entries | map(.key)", json!({"k": 1})),
        "[\"k\"]\n"
    );
    assert_eq!(
        render("[limit(3; 1 | repeat(. * 2))]", json!(null)),
        "[1,2,4]\n"
    );
}

#[test]
fn join_skips_null_like_gh() {
    assert_eq!(
        render("join(\"-\")", json!(["a", null, 1, true])),
        "a--1-true\n"
    );
}

#[test]
fn regex_filters() {
    assert_eq!(
        render(".[] | select(test(\"^v[0-9]\"))", json!(["v1", "x", "v2"])),
        "v1\nv2\n"
    );
    assert_eq!(render("test(\"ABC\"; \"i\")", json!("xabcx")), "true\n");
    assert_eq!(render("sub(\"-\"; \"_\")", json!("a-b-c")), "a_b-c\n");
    assert_eq!(render("gsub(\"-\"; \"_\")", json!("a-b-c")), "a_b_c\n");
    assert!(runtime_error("test(\"[\")", json!("x")).contains("regex"));
}

#[test]
fn formats() {
    assert_eq!(
        render("@csv", json!([1, "a,\"b\"", null, true])),
        "1,\"a,\"\"b\"\"\",,true\n"
    );
    assert_eq!(
        render("@tsv", json!(["a\tb", "c\\d", 2])),
        "a\\tb\tc\\\\d\t2\n"
    );
    assert_eq!(render("@base64", json!("hi")), "aGk=\n");
    assert_eq!(render("@uri", json!("a b")), "a%20b\n");
    assert_eq!(render("@sh", json!("it's")), "'it'\\''s'\n");
    assert_eq!(render("@json", json!({"a": [1]})), "{\"a\":[1]}\n");
}

#[test]
fn env_access() {
    let path = std::env::var("PATH").unwrap_or_default();
    assert_eq!(render("$ENV.PATH", json!(null)), format!("{path}\n"));
    assert_eq!(render("env.PATH", json!(null)), format!("{path}\n"));
}

#[test]
fn invalid_expressions_are_compile_errors() {
    let msg = compile_error(".foo & .bar");
    assert!(msg.contains("\"&\"") && msg.contains("column 6"), "{msg}");
    let msg = compile_error("map(.a");
    assert!(msg.contains("unclosed \"(\""), "{msg}");
    let msg = compile_error(".a |");
    assert!(msg.contains("end of expression"), "{msg}");
    let msg = compile_error("nosuchfilter(1)");
    assert!(msg.contains("nosuchfilter/1"), "{msg}");
    let msg = compile_error("$nope");
    assert!(msg.contains("$nope"), "{msg}");
    let msg = compile_error("[1, 2)");
    assert!(msg.contains("opened at line 1, column 1"), "{msg}");
    let msg = compile_error(".a\n| .b\n| . § 1");
    assert!(msg.contains("\"§\" at line 3, column 5"), "{msg}");
    compile_error("");
    compile_error("import \"x\" as x; .");
    let err = JqFilter::compile("[").unwrap_err();
    assert!(
        err.to_string().starts_with("invalid jq expression: "),
        "{err}"
    );
}

#[test]
fn runtime_errors() {
    let msg = runtime_error(".a.b", json!({"a": 5}));
    assert!(msg.contains("cannot index 5"), "{msg}");
    assert_eq!(runtime_error("error(\"x\")", json!(null)), "x");
    assert_eq!(
        runtime_error("error({\"a\": 1})", json!(null)),
        "{\"a\":1} (not a string)"
    );
    assert_eq!(runtime_error("\"bye\" | halt_error", json!(null)), "bye");
    assert_eq!(runtime_error("input", json!(null)), "No more inputs");
    let err = JqFilter::compile(".[]")
        .unwrap()
        .render(&json!(1))
        .unwrap_err();
    assert!(err.to_string().starts_with("jq: "), "{err}");
}

#[test]
fn errors_after_output_discard_the_output() {
    runtime_error(
        ".[] | if . == 2 then error(\"two\") else . end",
        json!([1, 2, 3]),
    );
}

#[test]
fn long_runtime_errors_are_abbreviated() {
    let big = "x".repeat(100_000);
    let msg = runtime_error("ascii_downcase", json!({"k": big}));
    assert!(msg.len() < 400, "{}", msg.len());
    assert!(msg.ends_with("as string"), "{msg}");
}

#[test]
fn halt_ends_output_without_error() {
    assert_eq!(render("1, halt, 2", json!(null)), "1\n");
}

#[test]
fn scalars_render_like_gh() {
    assert_eq!(render(".", json!(null)), "\n");
    assert_eq!(render(".", json!(true)), "true\n");
    assert_eq!(render(".", json!(3)), "3\n");
    assert_eq!(render(".", json!(-7)), "-7\n");
    assert_eq!(render(".", json!(3.0)), "3\n");
    assert_eq!(
        render(".", json!(18446744073709551615u64)),
        "18446744073709551615\n"
    );
    assert_eq!(render("6 / 2", json!(null)), "3\n");
    assert_eq!(render(".", json!(2.5)), "2.50\n");
    assert_eq!(render("1 / 3", json!(null)), "0.33\n");
    assert_eq!(render(".[]", json!([1, null, "s"])), "1\n\ns\n");
}

#[test]
fn integers_stay_integers_in_values() {
    assert_eq!(run("6 / 2", json!(null)), vec![json!(3)]);
    assert!(run("6 / 2", json!(null))[0].is_i64());
    assert_eq!(run(".", json!(1.5)), vec![json!(1.5)]);
    assert_eq!(
        run("[nan, infinite]", json!(null)),
        vec![json!([null, f64::MAX])]
    );
}

#[test]
fn containers_render_as_compact_sorted_json() {
    let input = json!({"z": {"y": [1, {"x": null}], "b": 2.5}, "a": "s"});
    assert_eq!(
        render(".", input),
        "{\"a\":\"s\",\"z\":{\"b\":2.5,\"y\":[1,{\"x\":null}]}}\n"
    );
    assert_eq!(
        render("[.[] | {id}]", json!([{"id": 1, "n": 2}])),
        "[{\"id\":1}]\n"
    );
    assert_eq!(
        render("[6 / 2, 1e21, 1e-7, 0.000001]", json!(null)),
        "[3,1e+21,1e-7,0.000001]\n"
    );
    assert_eq!(render("[], {}", json!(null)), "[]\n{}\n");
}

#[test]
fn strings_in_json_are_escaped_like_go() {
    let input = json!(["<a href=\"x\">&</a>", "tab\tnl\n\u{1}\u{8}", "\u{2028}é"]);
    assert_eq!(
        render(".", input),
        "[\"\\u003ca href=\\\"x\\\"\\u003e\\u0026\\u003c/a\\u003e\",\"tab\\tnl\\n\\u0001\\b\",\"\\u2028é\"]\n"
    );
}

#[test]
fn compiled_filter_is_reusable_and_shareable() {
    let filter = JqFilter::compile(".page").unwrap();
    for page in 1..=3 {
        assert_eq!(
            filter.render(&json!({"page": page})).unwrap(),
            format!("{page}\n")
        );
    }
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(filter.render(&json!({"page": 9})).unwrap(), "9\n"));
    });
}

#[test]
fn deep_nesting_does_not_crash() {
    assert_eq!(
        render("reduce range(20000) as $i (0; [.]) | flatten", json!(null)),
        "[0]\n"
    );
    let nested = format!("{}1{}", "(".repeat(2000), ")".repeat(2000));
    assert_eq!(render(&nested, json!(null)), "1\n");
    let recursive = "def f: if . > 0 then 1 + (. - 1 | f) else 0 end; 5000 | f";
    assert_eq!(render(recursive, json!(null)), "5000\n");
}

#[test]
fn response_body_parsing() {
    assert_eq!(parse_body(b"{\"a\":1}").unwrap(), json!({"a": 1}));
    let err = parse_body(b"<html>").unwrap_err();
    assert!(matches!(err, JqError::NotJson(_)), "{err:?}");
    assert!(
        err.to_string().starts_with("response is not JSON: "),
        "{err}"
    );
}

#[test]
fn absurdly_deep_output_is_an_error() {
    let msg = runtime_error("reduce range(50000) as $i (0; [.])", json!(null));
    assert!(msg.contains("nested"), "{msg}");
    let err = JqFilter::compile("reduce range(50000) as $i (0; {a: .})")
        .unwrap()
        .render(&json!(null))
        .unwrap_err();
    assert!(matches!(err, JqError::Runtime(_)), "{err:?}");
}

#[test]
fn deep_output_within_limit_can_be_used_and_dropped() {
    let out = run("reduce range(9000) as $i (0; [.])", json!(null));
    assert_eq!(out.len(), 1);
    let rendered = render("reduce range(9000) as $i (0; [.])", json!(null));
    assert_eq!(rendered.len(), 9000 * 2 + 2);
}
