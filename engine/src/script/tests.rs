//! Tests of the script layer: the sandbox, the message API, the FHIR helpers and utilities, and
//! the default ADT channel against hand-written golden Bundles.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::util::det_uuid;
use super::*;
use crate::hl7::Message;

/// The repository root (works from the engine crate and from a crate that includes this file
/// by absolute path).
fn repo() -> PathBuf {
    let f = Path::new(file!());
    if f.is_absolute() {
        f.ancestors().nth(4).unwrap().to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }
}

fn lib_dir() -> PathBuf {
    repo().join("scripts/lib")
}

fn host() -> ScriptHost {
    ScriptHost::new(&lib_dir(), ScriptLimits::default()).unwrap()
}

fn host_with(limits: ScriptLimits) -> ScriptHost {
    ScriptHost::new(&lib_dir(), limits).unwrap()
}

fn fixture(name: &str) -> Message {
    let bytes = std::fs::read(repo().join("fixtures/hl7v2").join(name)).unwrap();
    Message::parse(&bytes).unwrap()
}

fn a01() -> Message {
    fixture("adt_a01.hl7")
}

fn ctx() -> ScriptContext {
    ScriptContext {
        channel: "adt".into(),
        script_dir: repo().join("scripts"),
        transaction_id: Some(42),
        output_tree: false,
    }
}

fn transform(host: &ScriptHost, src: &str, msg: &Message) -> Result<TransformOutcome, ScriptError> {
    let ast = host.compile_source("test.rhai", src)?;
    host.run_transform(&ast, msg, &ctx())
}

/// Runs `src` (statements ending in an expression, no `fn` definitions) with `msg` and `ctx`,
/// and returns the expression's value as JSON. The value travels inside a resource so that any
/// type comes back; like all output it is pruned (`""`, `()` and empty arrays vanish).
fn eval_with(host: &ScriptHost, src: &str, msg: &Message, c: &ScriptContext) -> Value {
    let wrapped = format!("#{{resourceType: \"Basic\", v: {{\n{src}\n}}}}");
    let ast = host
        .compile_source("eval.rhai", &wrapped)
        .unwrap_or_else(|e| panic!("{src}: {e}"));
    match host.run_transform(&ast, msg, c) {
        Ok(TransformOutcome::Output { output, .. }) => {
            output.to_value()["entry"][0]["resource"]["v"].clone()
        }
        other => panic!("{src}: {other:?}"),
    }
}

fn value(host: &ScriptHost, src: &str) -> Value {
    eval_with(host, src, &a01(), &ctx())
}

/// Runs a whole transform and returns its output.
fn output(host: &ScriptHost, src: &str) -> Value {
    match transform(host, src, &a01()) {
        Ok(TransformOutcome::Output { output, .. }) => output.to_value(),
        other => panic!("{src}: {other:?}"),
    }
}

fn err(host: &ScriptHost, src: &str) -> ScriptError {
    match transform(host, src, &a01()) {
        Err(e) => e,
        Ok(o) => panic!("{src}: expected an error, got {o:?}"),
    }
}

/// Evaluates `src` for a string value.
fn text(src: &str) -> String {
    match value(&host(), src) {
        Value::String(s) => s,
        v => panic!("{src}: {v}"),
    }
}

// ---- sandbox -------------------------------------------------------------------------------

#[test]
fn every_limit_is_set_on_the_engine() {
    let limits = ScriptLimits {
        max_operations: 1234,
        max_call_levels: 7,
        max_expr_depth: 50,
        max_function_expr_depth: 40,
        max_string_size: 999,
        max_array_size: 88,
        max_map_size: 77,
        max_modules: 5,
        ..ScriptLimits::default()
    };
    let h = host_with(limits.clone());
    let e = h.engine();
    assert_eq!(e.max_operations(), 1234);
    assert_eq!(e.max_call_levels(), 7);
    assert_eq!(e.max_expr_depth(), 50);
    assert_eq!(e.max_function_expr_depth(), 40);
    assert_eq!(e.max_string_size(), 999);
    assert_eq!(e.max_array_size(), 88);
    assert_eq!(e.max_map_size(), 77);
    assert_eq!(e.max_modules(), 5);
    assert_eq!(h.limits(), &limits);
    // The defaults are the same in debug and release builds (Rhai's own are not).
    let d = ScriptLimits::default();
    assert_eq!(
        (d.max_operations, d.max_call_levels, d.max_expr_depth),
        (5_000_000, 32, 64)
    );
}

#[test]
fn limits_deserialize_with_durations_and_reject_unknown_keys() {
    let l: ScriptLimits =
        serde_json::from_value(json!({"max_operations": 10, "time_budget": "250ms"})).unwrap();
    assert_eq!(l.max_operations, 10);
    assert_eq!(l.time_budget, Duration::from_millis(250));
    assert_eq!(l.max_call_levels, ScriptLimits::default().max_call_levels);
    let l: ScriptLimits = serde_json::from_value(json!({"time_budget": 1500})).unwrap();
    assert_eq!(l.time_budget, Duration::from_millis(1500));
    let l: ScriptLimits = serde_json::from_value(json!({"time_budget": "2s"})).unwrap();
    assert_eq!(l.time_budget, Duration::from_secs(2));
    let l: ScriptLimits = serde_json::from_value(json!({"inline_slice": "250us"})).unwrap();
    assert_eq!(l.inline_slice, Duration::from_micros(250));
    let l: ScriptLimits = serde_json::from_value(json!({"inline_slice": "80µs"})).unwrap();
    assert_eq!(l.inline_slice, Duration::from_micros(80));
    assert!(serde_json::from_value::<ScriptLimits>(json!({"max_ops": 1})).is_err());
    assert!(serde_json::from_value::<ScriptLimits>(json!({"time_budget": "soon"})).is_err());
}

#[test]
fn endless_loop_stops_with_a_limit_naming_file_and_line() {
    let start = Instant::now();
    let e = err(&host(), "let x = 0;\nloop {\n    x += 1;\n}\n");
    assert!(
        matches!(
            e.kind,
            ScriptErrorKind::Limit(LimitKind::Operations) | ScriptErrorKind::Timeout
        ),
        "{e:?}"
    );
    assert_eq!(e.file, "test.rhai");
    assert!(matches!(e.line, Some(2..=3)), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn operations_limit_stops_an_endless_loop() {
    let h = host_with(ScriptLimits {
        max_operations: 10_000,
        time_budget: Duration::from_secs(60),
        ..ScriptLimits::default()
    });
    let e = err(&h, "loop {}");
    assert_eq!(e.kind, ScriptErrorKind::Limit(LimitKind::Operations), "{e}");
    assert_eq!((e.file.as_str(), e.line), ("test.rhai", Some(1)));
    assert!(e.to_string().starts_with("test.rhai:1:"), "{e}");
}

/// An error about the value a script ended with points at its last statement, where the
/// value comes from.
#[test]
fn a_wrong_final_value_is_reported_at_the_last_statement() {
    let e = err(&host(), "let x = 1;\nlet y = 2;\n\nx + y");
    assert_eq!(e.kind, ScriptErrorKind::Output, "{e}");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.to_string().starts_with("test.rhai:4:"), "{e}");
    let e = err(
        &host(),
        "let v = 1.0 / 0.0;\n#{resourceType: \"Basic\", id: \"b\", extension: [#{url: \"u\", valueDecimal: v}]}",
    );
    assert!(e.to_string().starts_with("test.rhai:2:1: "), "{e}");
    assert!(e.message.contains("not a JSON number"), "{e}");
}

/// A transaction handle holds its entries outside Rhai's size limits: `max_output_bytes`
/// bounds them, with the line that went past it, whether the entries are kept as text or as
/// trees (for a destination).
#[test]
fn a_transaction_is_held_to_max_output_bytes() {
    let h = host_with(ScriptLimits {
        max_output_bytes: 20_000,
        ..ScriptLimits::default()
    });
    let src = |n: usize| {
        format!(
            "let tx = transaction();\nlet s = \"x\";\ns.pad(1000, \"y\");\n\
             for i in 0..{n} {{\n  tx.create(#{{resourceType: \"Basic\", id: `b${{i}}`, \
             code: #{{text: s}}}});\n}}\ntx"
        )
    };
    for output_tree in [false, true] {
        let c = ScriptContext {
            output_tree,
            ..ctx()
        };
        let ast = h.compile_source("test.rhai", &src(10)).unwrap();
        assert!(
            matches!(
                h.run_transform(&ast, &a01(), &c),
                Ok(TransformOutcome::Output { .. })
            ),
            "ten fit"
        );
        let ast = h.compile_source("test.rhai", &src(100)).unwrap();
        let e = match h.run_transform(&ast, &a01(), &c) {
            Err(e) => e,
            Ok(o) => panic!("expected the limit, got {o:?}"),
        };
        assert!(e.to_string().contains("max_output_bytes"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");
        // An entry past the limit is not added: a script that catches the error still has a
        // whole Bundle of the entries that fit, through either way of adding one.
        for add in ["tx.create(r)", "tx.add(#{fullUrl: `urn:uuid:${i}`, resource: r, request: #{method: \"POST\", url: \"Basic\"}})"] {
            let caught = format!(
                "let tx = transaction();\nlet s = \"x\";\ns.pad(1000, \"y\");\n\
                 for i in 0..100 {{\n  let r = #{{resourceType: \"Basic\", id: `b${{i}}`, \
                 code: #{{text: s}}}};\n  try {{ {add}; }} catch {{ break; }}\n}}\ntx"
            );
            let ast = h.compile_source("test.rhai", &caught).unwrap();
            let Ok(TransformOutcome::Output { output, .. }) = h.run_transform(&ast, &a01(), &c)
            else {
                panic!("{add}: the entries that fit")
            };
            let entries = output.to_value()["entry"].as_array().unwrap().len();
            assert!((10..100).contains(&entries), "{add}: {entries}");
        }
    }
}

/// A comparer that errors, or runs past the budget, stops the sort and the run (Rhai's own sort
/// swallowed its errors and went on comparing, far past the budget); sorting still sorts.
#[test]
fn a_sort_comparer_is_held_to_the_limits() {
    assert_eq!(
        value(&host(), "let a = [3, 1, 2];\na.sort(|x, y| x - y);\na"),
        json!([1, 2, 3])
    );
    assert_eq!(
        value(&host(), "let a = [3, 1, 2];\na.sort_by(|x, y| x >= y);\na"),
        json!([3, 2, 1])
    );
    let e = err(
        &host(),
        "let a = [3, 1, 2];\na.sort(|x, y| { throw \"bad\" });\n#{}",
    );
    assert!(e.to_string().contains("bad"), "{e}");
    let h = host_with(ScriptLimits {
        max_operations: 0,
        time_budget: Duration::from_millis(100),
        ..ScriptLimits::default()
    });
    let start = Instant::now();
    let slow = "let a = [];\na.pad(2000, 1);\n\
                a.sort(|x, y| { let j = 0; while j < 100000 { j += 1; } x - y });\n#{}";
    let e = err(&h, slow);
    assert_eq!(e.kind, ScriptErrorKind::Timeout, "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "stopped at the budget: {:?}",
        start.elapsed()
    );
}

#[test]
fn wall_clock_budget_stops_a_loop_without_an_operations_limit() {
    let h = host_with(ScriptLimits {
        max_operations: 0,
        time_budget: Duration::from_millis(100),
        ..ScriptLimits::default()
    });
    let start = Instant::now();
    let e = err(&h, "let x = 0;\nwhile true { x += 1; }");
    assert_eq!(e.kind, ScriptErrorKind::Timeout, "{e}");
    assert_eq!((e.file.as_str(), e.line), ("test.rhai", Some(2)));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // A timeout inside a closure cannot be caught away.
    let e = err(
        &h,
        "let r = 0; try { [1].map(|x| { loop {} }); } catch { r = 1; } r",
    );
    assert_eq!(e.kind, ScriptErrorKind::Timeout, "{e}");
}

#[test]
fn deep_recursion_stops_with_a_limit() {
    let e = err(&host(), "fn f(x) {\n    f(x + 1)\n}\nf(0)");
    assert!(
        matches!(
            e.kind,
            ScriptErrorKind::Limit(LimitKind::CallLevels | LimitKind::Stack)
        ),
        "{e:?}"
    );
    assert_eq!(e.file, "test.rhai");
    assert!(e.line.is_some(), "{e:?}");
}

#[test]
fn stack_guard_stops_recursion_before_the_thread_overflows() {
    // With call levels effectively unlimited, only the stack guard stands between the script
    // and a 2 MiB worker stack: the run must fail cleanly, not abort the process.
    let e = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let h = host_with(ScriptLimits {
                max_call_levels: 100_000,
                ..ScriptLimits::default()
            });
            err(&h, "fn f(x) { [1, #{a: [f(x + 1)], b: x}] }\nf(0)")
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(e.kind, ScriptErrorKind::Limit(LimitKind::Stack), "{e}");
    assert_eq!(e.file, "test.rhai");
}

#[test]
fn huge_string_array_and_map_stop_with_their_limits() {
    // Rhai re-measures an array or map on every insert, so filling one is quadratic: small
    // limits keep this test fast in debug builds.
    let h = host_with(ScriptLimits {
        max_array_size: 1000,
        max_map_size: 500,
        ..ScriptLimits::default()
    });
    let e = err(&h, "let s = \"x\";\nloop { s += s; }");
    assert_eq!(e.kind, ScriptErrorKind::Limit(LimitKind::StringSize), "{e}");
    assert_eq!(e.line, Some(2));
    let e = err(&h, "let a = [];\nloop { a.push(1); }");
    assert_eq!(e.kind, ScriptErrorKind::Limit(LimitKind::ArraySize), "{e}");
    assert_eq!(e.line, Some(2));
    // Rhai checks a map's size when it is next used, not on each insert.
    let e = err(
        &h,
        "let m = #{};\nfor i in 0..2000 { m[`k${i}`] = i; }\nm.len()",
    );
    assert_eq!(e.kind, ScriptErrorKind::Limit(LimitKind::MapSize), "{e}");
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn expression_depth_is_checked_at_compile_time() {
    let h = host_with(ScriptLimits {
        max_expr_depth: 10,
        ..ScriptLimits::default()
    });
    let deep = format!("{}1{}", "(".repeat(40), ")".repeat(40));
    let e = h.compile_source("deep.rhai", &deep).unwrap_err();
    assert_eq!(e.kind, ScriptErrorKind::Limit(LimitKind::ExprDepth), "{e}");
    assert_eq!((e.file.as_str(), e.line), ("deep.rhai", Some(1)));
}

#[test]
fn module_count_is_limited() {
    let limits = ScriptLimits {
        max_modules: 1,
        ..ScriptLimits::default()
    };
    // The shipped library's modules import each other, so with one module allowed the host
    // itself refuses to load them; a library of independent modules loads, and a script
    // importing two of them hits the limit.
    let h = ScriptHost::new(&lib_dir(), limits.clone()).unwrap();
    let e = h.lib_errors().first().expect("a library error");
    assert_eq!(e.kind, ScriptErrorKind::Limit(LimitKind::Modules), "{e}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.rhai"), "fn one() { 1 }").unwrap();
    std::fs::write(dir.path().join("b.rhai"), "fn two() { 2 }").unwrap();
    let h = ScriptHost::new(dir.path(), limits).unwrap();
    let src = "import \"a\" as a;\nimport \"b\" as b;\n1";
    let e = match h.compile_source("m.rhai", src) {
        Err(e) => e,
        Ok(ast) => h.run_transform(&ast, &a01(), &ctx()).unwrap_err(),
    };
    assert_eq!(e.kind, ScriptErrorKind::Limit(LimitKind::Modules), "{e}");
}

#[test]
fn runtime_errors_carry_file_line_and_column() {
    let e = err(&host(), "let a = 1;\nlet b = msg.get(\"PID-\");\n");
    assert_eq!(e.kind, ScriptErrorKind::Runtime);
    assert_eq!((e.line, e.column), (Some(2), Some(13)), "{e}");
    assert!(e.message.contains("bad HL7 path"), "{e}");
    assert!(e.to_string().starts_with("test.rhai:2:13: "), "{e}");
    let e = err(&host(), "fn pick(a) {\n    a[3]\n}\npick([1])");
    assert_eq!((e.line, e.column), (Some(2), Some(7)), "{e}");
    assert!(
        e.message.contains("in pick() called at test.rhai:4:1"),
        "{e}"
    );
}

#[test]
fn compile_errors_carry_file_line_and_column() {
    let h = host();
    let e = h
        .compile_source("bad.rhai", "let x = 1;\nlet y = ;\n")
        .unwrap_err();
    assert_eq!(e.kind, ScriptErrorKind::Compile);
    assert_eq!((e.file.as_str(), e.line), ("bad.rhai", Some(2)));
    assert!(e.column.is_some());
    // Strict variables: a misspelt name fails at compile time, `msg` and `ctx` are known.
    let e = h
        .compile_source("typo.rhai", "let name = msg[\"PID-5.1\"];\nnmae")
        .unwrap_err();
    assert_eq!(
        (e.kind, e.line, e.column),
        (ScriptErrorKind::Compile, Some(2), Some(1))
    );
    assert!(h
        .compile_source("ok.rhai", "ctx.channel + msg.type")
        .is_ok());
    // eval would hide code from `orbiter check`.
    assert!(h.compile_source("eval.rhai", "eval(\"1\")").is_err());
    // A file that is not there is an I/O error naming it.
    let e = h
        .compile_file(Path::new("/nonexistent/x.rhai"))
        .unwrap_err();
    assert_eq!(
        (e.kind, e.file.as_str()),
        (ScriptErrorKind::Io, "/nonexistent/x.rhai")
    );
}

#[test]
fn errors_inside_library_functions_name_the_library_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.rhai"),
        "fn ok() { 1 }\nfn boom(x) {\n    x.get(\"nope\")\n}\n",
    )
    .unwrap();
    let h = ScriptHost::new(dir.path(), ScriptLimits::default()).unwrap();
    let ast = h
        .compile_source("main.rhai", "import \"m\" as m;\nm::ok();\nm::boom(msg)")
        .unwrap();
    let e = h.run_transform(&ast, &a01(), &ctx()).unwrap_err();
    assert!(e.file.ends_with("m.rhai"), "{e}");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("main.rhai:3"), "{e}");
}

#[test]
fn print_and_debug_go_to_the_logs() {
    let out = transform(
        &host(),
        "print(\"hello\");\ndebug(\"dbg\");\nlog(`id ${msg.control_id}`);\nskip(\"done\")",
        &a01(),
    )
    .unwrap();
    let TransformOutcome::Skip { reason, logs } = out else {
        panic!("{out:?}")
    };
    assert_eq!(reason, "done");
    assert_eq!(
        logs,
        [
            "hello",
            "[debug] test.rhai:2:1: \"dbg\"",
            "id ADT20240315083012001"
        ]
    );
}

#[test]
fn logs_are_capped_and_kept_on_errors() {
    let out = transform(&host(), "for i in 0..1500 { print(i); }\nskip()", &a01()).unwrap();
    let logs = out.logs();
    assert_eq!(logs.len(), 1001);
    assert_eq!(logs[999], "999");
    assert_eq!(logs[1000], "... 500 more log lines dropped");
    let e = err(&host(), "print(\"before\");\nthrow \"oops\";");
    assert_eq!(e.logs, ["before"]);
    assert_eq!(e.message, "oops");
}

#[test]
fn imports_only_see_scripts_lib() {
    let h = host();
    assert_eq!(
        h.modules(),
        [
            "allergy",
            "appointment",
            "ccda",
            "codes",
            "condition",
            "coverage",
            "datatypes",
            "document",
            "encounter",
            "header",
            "immunization",
            "notes",
            "orders",
            "patient",
            "related_person",
            "results",
            "site",
            "specimen"
        ]
    );
    for bad in [
        "../../etc/passwd",
        "/etc/passwd",
        "fhir_missing",
        "lib/datatypes",
    ] {
        let src = format!("let x = 1;\nimport \"{bad}\" as p;\n1");
        let e = h.compile_source("imp.rhai", &src).unwrap_err();
        assert_eq!(e.kind, ScriptErrorKind::Compile, "{bad}: {e}");
        assert_eq!((e.line, e.column), (Some(2), Some(1)), "{bad}: {e}");
        assert!(e.message.contains("cannot import"), "{e}");
        assert!(
            e.message.contains("\"datatypes\""),
            "lists what exists: {e}"
        );
    }
    assert_eq!(
        text("import \"datatypes\" as dt;\ndt::datetime(\"202612\")"),
        "2026-12"
    );
    assert_eq!(
        text("import \"codes.rhai\" as c;\nc::gender(\"F\")"),
        "female"
    );
}

/// A library file that does not compile, or whose imports cycle, is reported with its
/// file:line:col and fails only the scripts that import it.
#[test]
fn library_problems_fail_only_their_importers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.rhai"),
        "import \"b\" as b;\nfn x() { 1 }",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.rhai"),
        "import \"a\" as a;\nfn y() { 2 }",
    )
    .unwrap();
    let h = ScriptHost::new(dir.path(), ScriptLimits::default()).unwrap();
    let e = h.lib_errors().first().expect("the cycle is reported");
    assert!(e.message.contains("import cycle"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.rhai"), "fn x() {\n  let = 1;\n}").unwrap();
    std::fs::write(dir.path().join("fine.rhai"), "fn y() { 2 }").unwrap();
    let h = ScriptHost::new(dir.path(), ScriptLimits::default()).unwrap();
    let [e] = h.lib_errors() else {
        panic!("one library error: {:?}", h.lib_errors())
    };
    assert_eq!(e.kind, ScriptErrorKind::Compile);
    assert!(e.file.ends_with("broken.rhai"), "{e}");
    assert_eq!(e.line, Some(2));
    // A script importing the broken file fails with its error; one importing the other file,
    // or nothing, compiles.
    let e = h
        .compile_source("uses.rhai", "import \"broken\" as b;\n1")
        .unwrap_err();
    assert!(e.to_string().contains("broken.rhai:2:"), "{e}");
    h.compile_source("other.rhai", "import \"fine\" as f;\nf::y()")
        .unwrap();
    h.compile_source("plain.rhai", "1").unwrap();

    let h = ScriptHost::new(Path::new("/nonexistent/lib"), ScriptLimits::default()).unwrap();
    assert!(h.modules().is_empty());
}

// ---- message API ---------------------------------------------------------------------------

#[test]
fn message_reads_by_path() {
    assert_eq!(text("msg[\"PID-5.1\"]"), "DOE");
    assert_eq!(text("msg.get(\"PID-5.2\")"), "JOHN");
    assert_eq!(text("msg[\"PID-3[2].1\"]"), "999887777");
    assert_eq!(text("msg[\"PID-5\"]"), "DOE^JOHN^QUINCY^JR^^^L");
    assert_eq!(text("msg.type"), "ADT^A01");
    assert_eq!(
        text("`${msg.code}|${msg.trigger}|${msg.structure}|${msg.version}`"),
        "ADT|A01|ADT_A01|2.5.1"
    );
    assert_eq!(text("msg.control_id"), "ADT20240315083012001");
    assert_eq!(
        text("`${msg.sending_application}@${msg.sending_facility}>${msg.receiving_application}@${msg.receiving_facility} ${msg.timestamp} ${msg.processing_id}`"),
        "ADMITSYS@GENHOSP>ORBITER@HIE 20240315083012 P"
    );
    assert_eq!(
        value(&host(), "msg.get_all(\"PID-3[*].1\")"),
        json!(["MRN100234", "999887777"])
    );
}

#[test]
fn absent_empty_and_null_read_as_empty_text_and_can_be_told_apart() {
    let msg = Message::parse(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5\rPID|1||X||\"\"|||\r")
        .unwrap();
    let src = r#"
        [msg["PID-5"], msg["PID-4"], msg["PID-40"], msg["ZZZ-1"],
         msg.is_null("PID-5"), msg.is_null("PID-4"),
         msg.has("PID-5"), msg.has("PID-4"), msg.has("PID-40"),
         msg.value_kind("PID-5"), msg.value_kind("PID-4"), msg.value_kind("PID-40"), msg.value_kind("PID-3"),
         msg["PID-4"] == ""].map(|v| v.to_string())
    "#;
    let value = eval_with(&host(), src, &msg, &ctx());
    // The output prunes "" entries, so the four empty reads vanish from the array.
    assert_eq!(
        value,
        json!([
            "true", "false", "true", "true", "false", "null", "empty", "absent", "text", "true"
        ])
    );
}

#[test]
fn repetitions_fields_and_segments() {
    assert_eq!(
        value(
            &host(),
            "msg.repetitions(\"PID-3\").map(|cx| `${cx[1]}/${cx[\"4.1\"]}/${cx.get(5)}/${cx.path()}`)"
        ),
        json!(["MRN100234/GENHOSP/MR/PID[1]-3[1]", "999887777/USSSA/SS/PID[1]-3[2]"])
    );
    assert_eq!(
        text("msg.field(\"PID-3[2]\").value"),
        "999887777^^^USSSA^SS"
    );
    assert_eq!(text("msg.field(\"PID-5\")[\"1.1\"]"), "DOE");
    assert_eq!(value(&host(), "msg.repetitions(\"PID-4\").len()"), json!(0));
    let oru = fixture("oru_r01.hl7");
    let src = r#"
        let out = [];
        for obx in msg.segments("OBX") {
            out.push(`${obx.name}[${obx.index}] ${obx["3.1"]}=${obx[5]} ${obx.get("6.1")} ${obx.path("5")}`);
        }
        out.push(msg.segments().len().to_string());
        out.push(msg.count("OBX").to_string());
        out.push(msg.segment("OBR")[4]);
        out.push(msg.segments("OBX")[3].repetitions(5)[0].value);
        out
    "#;
    let value = eval_with(&host(), src, &oru, &ctx());
    assert_eq!(
        value,
        json!([
            "OBX[1] 2345-7=98 mg/dL OBX[1]-5",
            "OBX[2] 2160-0=1.1 mg/dL OBX[2]-5",
            "OBX[3] 2951-2=141 mmol/L OBX[3]-5",
            "OBX[4] 2823-3=5.4 mmol/L OBX[4]-5",
            "OBX[5] 17861-6=9.6 mg/dL OBX[5]-5",
            "10",
            "5",
            "24323-8^Comprehensive metabolic panel^LN",
            "5.4"
        ])
    );
}

#[test]
fn groups_collect_children_and_nest() {
    let msg = Message::parse(
        b"MSH|^~\\&|L|F|R|F|20240101||ORU^R01|1|P|2.5.1\r\
PID|1||P1\r\
ORC|RE|O1\r\
OBR|1|O1||A^Panel A\r\
NTE|1||note on A\r\
OBX|1|NM|X^x||1\r\
NTE|1||note on x\r\
OBX|2|NM|Y^y||2\r\
ORC|RE|O2\r\
OBR|2|O2||B^Panel B\r\
OBX|1|NM|Z^z||3\r\
SPM|1\r\
OBX|2|NM|W^w||4\r",
    )
    .unwrap();
    let src = r#"
        let out = [];
        for g in msg.groups("OBR", ["OBX", "NTE"]) {
            let obs = [];
            for o in g.groups("OBX", ["NTE"]) {
                obs.push(`${o.head[3]}:${o.head[5]}(${o.segments("NTE").len()})`);
            }
            out.push(`${g.name} ${g.head["4.1"]} children=${g.children.len()} obx=${g.segments("OBX").len()} ${obs}`);
        }
        out
    "#;
    let value = eval_with(&host(), src, &msg, &ctx());
    // The SPM ends panel B's group: OBX W belongs to the specimen, not to the order.
    assert_eq!(
        value,
        json!([
            "OBR A children=4 obx=2 [\"X^x:1(1)\", \"Y^y:2(0)\"]",
            "OBR B children=1 obx=1 [\"Z^z:3(0)\"]"
        ])
    );
}

#[test]
fn setters_rewrite_the_message() {
    let out = value(
        &host(),
        "msg.set(\"PID-5.1\", \"ROE\");\nmsg[\"PID-5.2\"] = \"JANE\";\nmsg.set(\"PID-8\", \"F\");\nmsg.set_raw(\"PID-9\", \"ALIAS^A\");\nmsg",
    );
    let rewritten = Message::parse(out.as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(
        rewritten.get_str("PID-5").unwrap().unwrap(),
        "ROE^JANE^QUINCY^JR^^^L"
    );
    assert_eq!(rewritten.get_str("PID-8").unwrap().unwrap(), "F");
    assert_eq!(rewritten.get_str("PID-9.2").unwrap().unwrap(), "A");
    assert_eq!(
        rewritten.get_str("MSH-10").unwrap().unwrap(),
        "ADT20240315083012001"
    );
    // Escaping happens on write; encode() gives the text.
    let enc = text("msg.set(\"PID-5.1\", \"A|B\");\nmsg.encode()");
    assert!(
        enc.contains("PID|1||MRN100234^^^GENHOSP^MR~999887777^^^USSSA^SS||A\\F\\B^JOHN"),
        "{enc}"
    );
    // A segment view taken before the write keeps the old value.
    assert_eq!(
        text("let pid = msg.segment(\"PID\");\nmsg.set(\"PID-5.1\", \"NEW\");\n`${pid[\"5.1\"]} ${msg[\"PID-5.1\"]}`"),
        "DOE NEW"
    );
    let e = err(&host(), "msg.set(\"ZZZ-1\", \"x\")");
    assert!(e.message.contains("segment is absent"), "{e}");
}

// ---- FHIR helpers and output ---------------------------------------------------------------

#[test]
fn entries_bundles_and_references() {
    let out = output(
        &host(),
        r#"
        let p = #{resourceType: "Patient", name: [#{family: "X", "use": "official"}]};
        let c = create_entry(p, "identifier=sys|1");
        let u = update_entry(p, identifier_url("Patient", "urn:id:H", "A 1"));
        let i = update_entry(#{resourceType: "Patient", id: "p1"});
        let e = #{resourceType: "Encounter", status: "planned", class: #{code: "AMB"},
                  subject: reference(u)};
        bundle_transaction([c, u, i, create_entry(e),
            #{fullUrl: urn_uuid("x"), resource: #{resourceType: "Basic", code: #{text: reference(#{resourceType: "Patient", id: "p1"}, "p one").reference},
                                          subject: reference(i, "p one")},
              request: #{method: "POST", url: "Basic"}}])
        "#,
    );
    let cond = "Patient?identifier=urn:id:H|A%201";
    let u_url = format!("urn:uuid:{}", det_uuid([cond]));
    assert_eq!(out["resourceType"], "Bundle");
    assert_eq!(out["type"], "transaction");
    let e = out["entry"].as_array().unwrap();
    assert_eq!(
        e[0]["request"],
        json!({"method": "POST", "url": "Patient", "ifNoneExist": "identifier=sys|1"})
    );
    assert_eq!(
        e[0]["fullUrl"],
        format!("urn:uuid:{}", det_uuid(["Patient?identifier=sys|1"]))
    );
    assert_eq!(e[0]["resource"]["name"][0]["use"], "official");
    assert_eq!(e[1]["request"], json!({"method": "PUT", "url": cond}));
    assert_eq!(e[1]["fullUrl"], u_url.as_str());
    assert_eq!(
        e[2]["request"],
        json!({"method": "PUT", "url": "Patient/p1"})
    );
    assert_eq!(e[3]["resource"]["subject"], json!({"reference": u_url}));
    assert_eq!(
        e[3]["request"],
        json!({"method": "POST", "url": "Encounter"})
    );
    assert!(e[3]["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
    assert_eq!(e[4]["resource"]["code"]["text"], "Patient/p1");
    assert_eq!(
        e[4]["resource"]["subject"],
        json!({"reference": e[2]["fullUrl"], "display": "p one"})
    );
    assert_eq!(e[4]["fullUrl"], format!("urn:uuid:{}", det_uuid(["x"])));
}

#[test]
fn ids_are_deterministic_from_content() {
    let a = text("det_id(\"a\", 1, msg[\"PID-3.1\"])");
    assert_eq!(a, text("det_id([\"a\", 1, \"MRN100234\"])"));
    assert_ne!(a, text("det_id(\"a\", 2, msg[\"PID-3.1\"])"));
    assert_eq!(a.len(), 36);
    assert_eq!(
        text("urn_uuid(\"a\", 1, \"MRN100234\")"),
        format!("urn:uuid:{a}")
    );
    assert_eq!(
        text("sha256(\"abc\")"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // Unconditional creates get fullUrls from the message and their rank: same run, same ids.
    let src = "bundle_transaction([create_entry(#{resourceType: \"Basic\"}), create_entry(#{resourceType: \"Basic\"})])";
    let one = output(&host(), src);
    assert_eq!(one, output(&host(), src));
    assert_ne!(one["entry"][0]["fullUrl"], one["entry"][1]["fullUrl"]);
}

#[test]
fn helper_misuse_is_a_runtime_error() {
    let h = host();
    for (src, needle) in [
        ("create_entry(#{name: 1})", "no resourceType"),
        (
            "update_entry(#{resourceType: \"Patient\"})",
            "needs resource.id",
        ),
        (
            "update_entry(#{resourceType: \"Patient\"}, \"Encounter?x=1\")",
            "must be Patient?",
        ),
        ("identifier_url(\"Patient\", \"s\", \"\")", "no value"),
        ("reference(#{a: 1})", "neither an entry"),
        ("reference(1)", "expected an entry"),
    ] {
        let e = err(&h, src);
        assert_eq!(e.kind, ScriptErrorKind::Runtime, "{src}");
        assert!(e.message.contains(needle), "{src}: {e}");
    }
}

#[test]
fn output_is_pruned_and_wrapped() {
    // One resource → a transaction Bundle with a POST entry; empty elements are dropped and
    // resourceType comes first.
    let out = output(
        &host(),
        "#{resourceType: \"Patient\", active: true, name: [#{family: msg[\"PID-99\"], given: [\"\", ()]}], gender: \"\", x: #{y: []}, birthDate: hl7_date(msg[\"PID-7\"])}",
    );
    let entry = &out["entry"][0];
    assert_eq!(
        entry["resource"],
        json!({"resourceType": "Patient", "active": true, "birthDate": "1980-04-12"})
    );
    assert_eq!(
        serde_json::to_string(&entry["resource"]).unwrap(),
        r#"{"resourceType":"Patient","active":true,"birthDate":"1980-04-12"}"#
    );
    assert_eq!(
        entry["request"],
        json!({"method": "POST", "url": "Patient"})
    );
    assert!(entry["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
    // An array: resources with an id are PUT, entries are kept.
    let out = output(
        &host(),
        "[#{resourceType: \"Patient\", id: \"p1\"}, create_entry(#{resourceType: \"Basic\"}, \"identifier=a|b\")]",
    );
    assert_eq!(
        out["entry"][0]["request"],
        json!({"method": "PUT", "url": "Patient/p1"})
    );
    assert_eq!(out["entry"][1]["request"]["ifNoneExist"], "identifier=a|b");
    // A replay gives the same Bundle.
    let src = "[#{resourceType: \"Observation\", status: \"final\"}]";
    assert_eq!(output(&host(), src), output(&host(), src));
    // Numbers, floats and strings pass through.
    assert_eq!(
        output(&host(), "#{resourceType: \"Basic\", n: 1, f: 1.5}")["entry"][0]["resource"],
        json!({"resourceType": "Basic", "f": 1.5, "n": 1})
    );
    assert_eq!(output(&host(), "\"plain\""), json!("plain"));
}

#[test]
fn bad_output_is_an_output_error() {
    let h = host();
    for (src, needle) in [
        ("()", "empty"),
        ("#{resourceType: \"Patient\", name: \"\"}.name", "empty string"),
        ("42", "number"),
        ("[1]", "element 0"),
        ("[#{a: 1}]", "neither resourceType"),
        (
            "#{resourceType: \"Bundle\", type: \"transaction\", entry: [#{resource: #{resourceType: \"Patient\"}}]}",
            "request.method",
        ),
        ("#{resourceType: \"Bundle\"}", "no type"),
        ("#{resourceType: \"Basic\", f: 1.0 / 0.0}", "not a JSON number"),
        // A Transaction's entries are written as text when added, and checked at the end.
        (
            "let tx = transaction(); tx.update(#{resourceType: \"Patient\"}, \"Patient?identifier=a|b\"); tx.add(#{resource: #{name: \"x\"}, request: #{method: \"PUT\", url: \"Basic?identifier=a|c\"}}); tx",
            "entry 1 of the transaction Bundle (PUT Basic?identifier=a|c) has no resource with a resourceType",
        ),
        (
            "let tx = batch(); tx.add(#{resource: #{resourceType: \"Patient\"}, request: #{method: \"PUT\"}}); tx",
            "entry 0 of the batch Bundle has no request.url",
        ),
    ] {
        let e = err(&h, src);
        assert_eq!(e.kind, ScriptErrorKind::Output, "{src}: {e}");
        assert!(e.message.contains(needle), "{src}: {e}");
        assert_eq!(e.file, "test.rhai");
    }
}

/// A delivered output (`ctx.output_tree`) is built as a tree and written from it; otherwise a
/// `transaction()` writes its entries as text. Both give the same bytes, and the tree is the
/// text parsed.
#[test]
fn output_text_is_the_same_with_or_without_the_tree() {
    let h = host();
    let ast = h
        .compile_source(
            "both.rhai",
            &std::fs::read_to_string(repo().join("scripts/adt_to_fhir.rhai")).unwrap(),
        )
        .unwrap();
    let srcs = [
        r#"let tx = transaction(); tx.update(#{resourceType: "Patient", name: [#{family: "O\"Brien", given: ["", ()]}], x: #{}}, "Patient?identifier=a|b"); tx.create(#{resourceType: "Basic", code: #{text: "Zoë\n\t"}}); tx.add(#{fullUrl: "urn:uuid:1", resource: #{resourceType: "Basic"}, request: #{method: "POST", url: "Basic"}}); tx"#,
        r#"let tx = batch(); tx.create(#{resourceType: "Basic"}); tx"#,
        r#"#{resourceType: "Patient", active: true}"#,
    ];
    let mut scripts: Vec<_> = srcs
        .iter()
        .map(|src| h.compile_source("both.rhai", src).unwrap())
        .collect();
    scripts.push(ast);
    for (n, script) in scripts.iter().enumerate() {
        let run = |output_tree| {
            let c = ScriptContext {
                output_tree,
                ..ctx()
            };
            match h.run_transform(script, &fixture("adt_a01_full.hl7"), &c) {
                Ok(TransformOutcome::Output { output, tree, .. }) => (output, tree),
                other => panic!("{other:?}"),
            }
        };
        let (text, none) = run(false);
        let (text_of_tree, tree) = run(true);
        assert_eq!(text.json(), text_of_tree.json());
        assert_eq!(tree.expect("the tree, when asked for"), text.to_value());
        // All but the plain resource end with a transaction() (adt_to_fhir.rhai too).
        assert_eq!(
            none.is_none(),
            n != 2,
            "script {n}: a tree only when asked for or built"
        );
    }
}

#[test]
fn transaction_builder() {
    let out = output(
        &host(),
        r#"
        let tx = transaction();
        let p = tx.update(#{resourceType: "Patient", gender: "male", name: []},
                          identifier_url("Patient", "urn:id:H", "1"));
        let o = tx.create(#{resourceType: "Observation", status: "final", subject: reference(p)});
        tx.create(#{resourceType: "Basic"}, "identifier=a|b");
        tx.update(#{resourceType: "Patient", id: "p9"});
        tx.add(#{fullUrl: "urn:uuid:1", resource: #{resourceType: "Basic"}, request: #{method: "POST", url: "Basic"}});
        if tx.len != 5 { throw "len" }
        tx
        "#,
    );
    let p_url = urn("Patient?identifier=urn:id:H|1");
    assert_eq!(out["resourceType"], "Bundle");
    assert_eq!(out["type"], "transaction");
    let e = out["entry"].as_array().unwrap();
    assert_eq!(e.len(), 5);
    assert_eq!(e[0]["fullUrl"], p_url.as_str());
    assert_eq!(
        e[0]["resource"],
        json!({"resourceType": "Patient", "gender": "male"})
    );
    assert_eq!(e[1]["resource"]["subject"], json!({"reference": p_url}));
    assert_eq!(
        e[1]["request"],
        json!({"method": "POST", "url": "Observation"})
    );
    assert_eq!(e[2]["request"]["ifNoneExist"], "identifier=a|b");
    assert_eq!(
        e[3]["request"],
        json!({"method": "PUT", "url": "Patient/p9"})
    );
    assert_eq!(e[4]["fullUrl"], "urn:uuid:1");
    // batch() gives a batch Bundle; a bad entry fails at the line that added it.
    assert_eq!(
        output(
            &host(),
            "let b = batch(); b.create(#{resourceType: \"Basic\"}); b"
        )["type"],
        "batch"
    );
    let e = err(&host(), "let tx = transaction();\ntx.add(#{resource: #{resourceType: \"Basic\", x: 1.0 / 0.0}});\ntx");
    assert_eq!((e.kind, e.line), (ScriptErrorKind::Runtime, Some(2)), "{e}");
    assert!(e.message.contains("resource.x"), "{e}");
    // The entries are checked like any transaction.
    let e = err(
        &host(),
        "let tx = transaction();\ntx.add(#{fullUrl: \"urn:uuid:1\"});\ntx",
    );
    assert_eq!(e.kind, ScriptErrorKind::Output, "{e}");
}

#[test]
fn the_site_authority_table_gives_systems_unless_the_sender_gave_a_universal_id() {
    let msg = Message::parse(
        "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5.1\r\
PID|1||1^^^GENHOSP^MR~2^^^GENHOSP&1.2.3&ISO^PI~3^^^OTHER^PI~4^^^^PI||X\r"
            .as_bytes(),
    )
    .unwrap();
    let v = eval_with(
        &host(),
        r#"
        import "datatypes" as dt;
        import "site" as site;
        let table = authority_table(#{ "GENHOSP": "urn:oid:9.9" });
        #{
            site: dt::identifier(msg.repetitions("PID-3")).map(|i| i.system),
            own: v2_identifier(msg.repetitions("PID-3"), "", table).map(|i| i.system),
            none: v2_identifier(msg.repetitions("PID-3"), "").map(|i| i.system),
            hd: [v2_system("GENHOSP", "", "", table), v2_system("GENHOSP", "1.2", "ISO", table)],
            lookup: [site::authority_system("GENHOSP"), site::authority_system("NOPE") == ()]
        }
        "#,
        &msg,
        &ctx(),
    );
    let genhosp = "urn:oid:2.16.840.1.113883.3.9999.1";
    assert_eq!(
        v["site"],
        json!([genhosp, "urn:oid:1.2.3", "urn:id:OTHER"]),
        "{v}"
    );
    assert_eq!(
        v["own"],
        json!(["urn:oid:9.9", "urn:oid:1.2.3", "urn:id:OTHER"])
    );
    assert_eq!(
        v["none"],
        json!(["urn:id:GENHOSP", "urn:oid:1.2.3", "urn:id:OTHER"])
    );
    assert_eq!(v["hd"], json!(["urn:oid:9.9", "urn:oid:1.2"]));
    assert_eq!(v["lookup"], json!([genhosp, true]));
    // A table entry that is not a URI string is the site's mistake, named as such.
    let e = err(&host(), "authority_table(#{ \"GENHOSP\": 1 })");
    assert!(
        e.message
            .contains("authority_table: \"GENHOSP\" maps to a i64, not a system URI string"),
        "{e}"
    );
    let e = err(&host(), "authority_table(#{ \"GENHOSP\": \" \" })");
    assert!(e.message.contains("maps to an empty system"), "{e}");
}

#[test]
fn v2_data_types() {
    let msg = Message::parse(
        "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5.1\r\
PID|1||X1^^^&2.16.840.1&ISO^PI^^20200101~^^^H^MR||O\\T\\BRIEN^MARY^ANN^^MS^PHD^M~^^^^^^N||||||^^^^^^M~\"\"||^NET^Internet^m@x.org~5551234^PRN~^ORN^FX^^^^^^^^^+15550000\r\
OBX|1|CWE|8867-4^Heart rate^LN^HR^Pulse^99LOCAL||7^seven^HL70078^^^^^^orig text|\r\
PV1|1|I|||||D1^DOC^ANN^^^DR^^^&1.2.3&ISO\r"
            .as_bytes(),
    )
    .unwrap();
    let v = eval_with(
        &host(),
        r#"
        import "datatypes" as dt;
        #{
            ids: dt::identifier(msg.repetitions("PID-3")),
            names: dt::human_name(msg.repetitions("PID-5")),
            addresses: dt::address(msg.repetitions("PID-11")),
            telecom: dt::contact_point(msg.repetitions("PID-13")),
            code: dt::codeable_concept(msg.field("OBX-3")),
            value: dt::codeable_concept(msg.field("OBX-5")),
            doc: dt::practitioner_reference(msg.field("PV1-7")),
            system: dt::cx_system(msg.field("PID-3")),
            nothing: dt::identifier(msg.field("PID-4")),
            found: msg.find_repetition("PID-3", "5", "MR")[1] + "|" + msg.find_repetition("PID-3", "4.1", "H").path(),
            missing: msg.find_repetition("PID-3", "5", "XX") == (),
            joined: join_nonblank(["a", "", (), "b"], "-")
        }
        "#,
        &msg,
        &ctx(),
    );
    assert_eq!(
        v["ids"],
        json!([{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI", "display": "Patient internal identifier"}]},
            "system": "urn:oid:2.16.840.1",
            "value": "X1",
            "period": {"start": "2020-01-01"}
        }])
    );
    assert_eq!(
        v["names"],
        json!([
            {"use": "maiden", "family": "O&BRIEN", "given": ["MARY", "ANN"], "prefix": ["MS"], "suffix": ["PHD"]}
        ])
    );
    assert_eq!(
        v["telecom"],
        json!([
            {"system": "email", "value": "m@x.org"},
            {"system": "phone", "value": "5551234", "use": "home"},
            {"system": "fax", "value": "+15550000", "use": "home"}
        ])
    );
    assert_eq!(
        v["code"],
        json!({"coding": [
            {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
            {"system": "urn:id:99LOCAL", "code": "HR", "display": "Pulse"}
        ]})
    );
    assert_eq!(
        v["value"],
        json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0078", "code": "7", "display": "seven"}], "text": "orig text"})
    );
    assert_eq!(
        v["doc"],
        json!({"identifier": {"system": "urn:oid:1.2.3", "value": "D1"}, "display": "DR ANN DOC"})
    );
    assert_eq!(v["system"], "urn:oid:2.16.840.1");
    assert_eq!(v.get("nothing"), None);
    assert_eq!(
        v.get("addresses"),
        None,
        "a postal-type address with no parts, and a null"
    );
    assert_eq!(v["found"], "|PID[1]-3[2]");
    assert_eq!(v["missing"], true);
    assert_eq!(v["joined"], "a-b");
    // Not a Field: a clear error.
    let e = err(&host(), "v2_human_name(\"DOE\")");
    assert!(e.message.contains("expected a Field"), "{e}");
}

#[test]
fn codes_module() {
    let v = value(
        &host(),
        r#"
        import "codes" as codes;
        [codes::gender("F"), codes::gender("U"), codes::gender("Z"),
         codes::encounter_class("E").code, codes::encounter_class("").code,
         codes::marital_status("S").coding[0].code, codes::marital_status("Q").coding[0].system,
         codes::marital_status(""), codes::coding_system("SCT"), codes::v2_table("0004")]
        "#,
    );
    assert_eq!(
        v,
        json!([
            "female",
            "unknown",
            "EMER",
            "UNK",
            "S",
            "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
            "http://snomed.info/sct",
            "http://terminology.hl7.org/CodeSystem/v2-0004"
        ])
    );
}

// ---- utilities -----------------------------------------------------------------------------

#[test]
fn hl7_dates_in_scripts() {
    assert_eq!(
        text("hl7_datetime(\"20261201123000+0100\")"),
        "2026-12-01T12:30:00+01:00"
    );
    assert_eq!(text("hl7_datetime(\"2026\")"), "2026");
    assert_eq!(text("hl7_datetime(\"202612\")"), "2026-12");
    assert_eq!(text("hl7_datetime(\"20261201\")"), "2026-12-01");
    assert_eq!(
        text("hl7_datetime(\"20261201123000.25\", \"-05:00\")"),
        "2026-12-01T12:30:00.25-05:00"
    );
    // A time with no zone, and none given: an error saying how, not an invalid dateTime.
    let e = err(&host(), "hl7_datetime(\"20261201123000\")");
    assert!(e.message.contains("UTC offset"), "{e}");
    assert_eq!(
        text("hl7_datetime(\"202612011230\", \"Z\")"),
        "2026-12-01T12:30:00+00:00"
    );
    assert_eq!(text("hl7_date(msg.timestamp)"), "2024-03-15");
    assert_eq!(
        text("hl7_instant(\"20261201123000-0500\")"),
        "2026-12-01T12:30:00-05:00"
    );
    assert_eq!(
        text("hl7_instant(msg.timestamp, \"+01:00\")"),
        "2024-03-15T08:30:12+01:00"
    );
    assert_eq!(text("`[${hl7_datetime(msg[\"PID-99\"])}]`"), "[]");
    let e = err(&host(), "hl7_datetime(\"20261301\")");
    assert!(e.message.contains("month 13"), "{e}");
    let e = err(&host(), "hl7_instant(\"20261201\")");
    assert!(e.message.contains("time of day"), "{e}");
    let e = err(&host(), "hl7_instant(\"20261201123000\")");
    assert!(e.message.contains("UTC offset"), "{e}");
}

#[test]
fn lookup_tables_beside_the_script() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sex.csv"), "key,value\nM,male\nF,female\n").unwrap();
    std::fs::create_dir(dir.path().join("tables")).unwrap();
    std::fs::write(
        dir.path().join("tables/class.json"),
        r#"{"I": {"code": "IMP", "display": "inpatient"}, "n": 3}"#,
    )
    .unwrap();
    let h = host();
    let c = ScriptContext {
        script_dir: dir.path().to_path_buf(),
        ..ctx()
    };
    let run = |src: &str| {
        let ast = h.compile_source("l.rhai", src).unwrap();
        h.run_transform(&ast, &a01(), &c)
    };
    let value = eval_with(
        &h,
        r#"[lookup("sex.csv", msg["PID-8"]), lookup("sex.csv", "X") == (), lookup("sex.csv", "X", "unknown"),
            lookup("tables/class.json", "I").code, lookup("tables/class.json", "n") + 1]"#,
        &a01(),
        &c,
    );
    assert_eq!(value, json!(["male", true, "unknown", "IMP", 4]));
    // Loaded once per host: a table removed after first use is still served from the cache.
    std::fs::remove_file(dir.path().join("sex.csv")).unwrap();
    assert!(run("lookup(\"sex.csv\", \"F\")").is_ok());
    for (src, needle) in [
        ("lookup(\"missing.csv\", 1)", "missing.csv"),
        ("lookup(\"../secret.csv\", 1)", "no absolute path"),
        ("lookup(\"/etc/passwd.csv\", 1)", "no absolute path"),
        ("lookup(\"table.txt\", 1)", ".csv or .json"),
    ] {
        let e = run(src).unwrap_err();
        assert!(e.message.contains(needle), "{src}: {e}");
        assert_eq!(e.line, Some(1));
    }
}

#[test]
fn context_is_visible_and_constant() {
    assert_eq!(text("`${ctx.channel}/${ctx.transaction_id}`"), "adt/42");
    let e = err(&host(), "ctx.channel = \"x\";\n1");
    assert_eq!(e.kind, ScriptErrorKind::Runtime, "{e}");
}

#[test]
fn a_value_json_cannot_hold_is_named_as_the_script_knows_it() {
    let e = err(
        &host(),
        "let tx = transaction(); tx.update(#{resourceType: \"Patient\", id: \"1\", name: msg.field(\"PID-5\")}); tx",
    );
    assert!(
        e.message.contains("a Field (its text is field.value"),
        "{e}"
    );
    assert!(!e.message.contains("orbiter::"), "{e}");
}

#[test]
fn an_empty_transaction_filters_the_message_however_it_was_built() {
    let h = host();
    for src in [
        "transaction()",
        "batch()",
        "bundle_transaction([])",
        "[]",
        "let tx = transaction(); if false { tx.create(#{resourceType: \"Basic\"}); } tx",
    ] {
        let out = transform(&h, src, &a01()).unwrap();
        assert!(
            matches!(out, TransformOutcome::Skip { ref reason, .. } if reason == super::output::WROTE_NOTHING),
            "{src}: {out:?}"
        );
    }
    // One entry is output as before.
    let out = transform(
        &h,
        "let tx = transaction(); tx.create(#{resourceType: \"Basic\"}); tx",
        &a01(),
    )
    .unwrap();
    assert!(matches!(out, TransformOutcome::Output { .. }), "{out:?}");
}

#[test]
fn skip_and_reject() {
    let h = host();
    let out = transform(&h, "skip(\"not for us\")", &a01()).unwrap();
    assert!(matches!(out, TransformOutcome::Skip { ref reason, .. } if reason == "not for us"));
    let out = transform(
        &h,
        "if msg.trigger == \"A01\" { reject(\"PID-3 missing\") }\n1",
        &a01(),
    )
    .unwrap();
    assert!(
        matches!(out, TransformOutcome::Reject { ref reason, .. } if reason == "PID-3 missing")
    );
    // Neither can be caught away, even from inside a function.
    let out = transform(
        &h,
        "fn f() { reject(\"deep\") }\nlet x = 0;\ntry { f(); } catch { x = 1; }\n#{resourceType: \"Basic\"}",
        &a01(),
    )
    .unwrap();
    assert!(
        matches!(out, TransformOutcome::Reject { ref reason, .. } if reason == "deep"),
        "{out:?}"
    );
    let out = transform(
        &h,
        "let r = [1].map(|x| skip(\"in closure\"));\n#{resourceType: \"Basic\"}",
        &a01(),
    )
    .unwrap();
    assert!(
        matches!(out, TransformOutcome::Skip { ref reason, .. } if reason == "in closure"),
        "{out:?}"
    );
}

#[test]
fn filters() {
    let h = host();
    let run = |src: &str| {
        let ast = h.compile_source("f.rhai", src).unwrap();
        h.run_filter(&ast, &a01(), &ctx())
    };
    assert!(run("msg.type == \"ADT^A01\"").unwrap().keep);
    assert!(!run("msg.sending_facility == \"OTHER\"").unwrap().keep);
    let out =
        run("print(\"checking\");\nif msg[\"PID-8\"] == \"M\" { skip(\"male\") }\ntrue").unwrap();
    assert_eq!(
        out,
        FilterOutcome {
            keep: false,
            reason: Some("male".into()),
            logs: vec!["checking".into()]
        }
    );
    assert_eq!(run("skip()").unwrap().reason, None);
    let e = run("\"yes\"").unwrap_err();
    assert_eq!(e.kind, ScriptErrorKind::Output, "{e}");
    let e = run("reject(\"no\")").unwrap_err();
    assert!(e.message.contains("cannot be used in a filter"), "{e}");
    let e = run("loop {}").unwrap_err();
    assert!(matches!(
        e.kind,
        ScriptErrorKind::Limit(LimitKind::Operations) | ScriptErrorKind::Timeout
    ));
}

#[test]
fn error_display_format() {
    let e = ScriptError {
        file: "a.rhai".into(),
        line: Some(3),
        column: Some(7),
        message: "boom".into(),
        kind: ScriptErrorKind::Runtime,
        logs: vec![],
    };
    assert_eq!(e.to_string(), "a.rhai:3:7: boom");
    let e = ScriptError::new("a.rhai", ScriptErrorKind::Output, "bad");
    assert_eq!(e.to_string(), "a.rhai: bad");
}

#[test]
fn hosts_on_two_threads_keep_their_runs_apart() {
    // As the transform workers do: a host per thread (script values are not `Send`), each run
    // with its own log.
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let h = host();
                let ast = h
                    .compile_source("t.rhai", "print(msg.control_id); msg.type")
                    .unwrap();
                for _ in 0..50 {
                    let out = h.run_transform(&ast, &a01(), &ctx()).unwrap();
                    assert_eq!(out.logs(), ["ADT20240315083012001"]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn readme_examples_compile_and_run() {
    let readme = std::fs::read_to_string(repo().join("scripts/README.md")).unwrap();
    let h = host();
    let mut ran = 0;
    for (i, block) in readme.split("```rhai\n").skip(1).enumerate() {
        let code = block.split("```").next().unwrap();
        if code.contains("...") {
            continue; // a fragment
        }
        let name = format!("README block {i}");
        let ast = h
            .compile_source(&name, code)
            .unwrap_or_else(|e| panic!("{e}\n{code}"));
        for msg in [a01(), fixture("oru_r01.hl7")] {
            match h.run_transform(&ast, &msg, &ctx()) {
                Ok(_) => {}
                Err(e) if e.kind == ScriptErrorKind::Output => {}
                Err(e) => panic!("{e}\n{code}"),
            }
        }
        ran += 1;
    }
    assert!(ran >= 4, "{ran}");
}

// ---- the default ADT channel ---------------------------------------------------------------

fn adt(msg: &Message) -> TransformOutcome {
    let h = host();
    let ast = h
        .compile_file(&repo().join("scripts/adt_to_fhir.rhai"))
        .unwrap();
    h.run_transform(&ast, msg, &ctx()).unwrap()
}

fn adt_bundle(msg: &Message) -> (Value, Vec<String>) {
    match adt(msg) {
        TransformOutcome::Output { output, logs, .. } => (output.to_value(), logs),
        o => panic!("{o:?}"),
    }
}

fn urn(key: &str) -> String {
    format!("urn:uuid:{}", det_uuid([key]))
}

// The default ADT script's output field by field is checked against the fixtures'
// expectations (and a FHIR R4 validator) in tests/mapping.rs; these tests pin its keys.

#[test]
fn default_adt_script_maps_a01() {
    let (bundle, logs) = adt_bundle(&a01());
    assert!(logs.is_empty(), "{logs:?}");
    // GENHOSP is given its OID in scripts/lib/site.rhai.
    let patient_url = "Patient?identifier=urn:oid:2.16.840.1.113883.3.9999.1|MRN100234";
    let encounter_url = "Encounter?identifier=urn:oid:2.16.840.1.113883.3.9999.1|ACCT5566778";
    let kinds: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "Patient",
            "Encounter",
            "RelatedPerson",
            "MessageHeader",
            "Provenance"
        ]
    );
    let patient = &bundle["entry"][0];
    assert_eq!(patient["fullUrl"], urn(patient_url));
    assert_eq!(
        patient["request"],
        json!({"method": "PUT", "url": patient_url})
    );
    assert_eq!(
        patient["resource"]["name"],
        json!([{"use": "official", "family": "DOE", "given": ["JOHN", "QUINCY"], "suffix": ["JR"]}])
    );
    assert_eq!(patient["resource"]["birthDate"], "1980-04-12");
    let encounter = &bundle["entry"][1];
    assert_eq!(
        encounter["request"],
        json!({"method": "PUT", "url": encounter_url})
    );
    assert_eq!(encounter["resource"]["status"], "in-progress");
    assert_eq!(
        encounter["resource"]["subject"],
        json!({"reference": urn(patient_url)})
    );
    assert_eq!(
        encounter["resource"]["period"],
        json!({"start": "2024-03-15T08:00:00+00:00"})
    );
    // Every entry is an update keyed on the message's content.
    for e in bundle["entry"].as_array().unwrap() {
        assert_eq!(e["request"]["method"], "PUT", "{e}");
    }
    // resourceType leads every resource.
    let text = serde_json::to_string(&bundle).unwrap();
    assert!(text.starts_with("{\"resourceType\":\"Bundle\""));
    assert!(text.contains("\"resource\":{\"resourceType\":\"Patient\""));
    // A replay produces the same Bundle.
    assert_eq!(adt_bundle(&a01()).0, bundle);
}

#[test]
fn default_adt_script_maps_a08_as_an_update_of_the_same_patient() {
    let (bundle, logs) = adt_bundle(&fixture("adt_a08.hl7"));
    let patient = &bundle["entry"][0];
    assert_eq!(patient["resource"]["resourceType"], "Patient");
    assert_eq!(
        patient["resource"]["address"][0]["line"],
        json!(["456 OAK AVE"])
    );
    // The A01 created the Patient under the same conditional URL and fullUrl.
    let (a01_bundle, _) = adt_bundle(&a01());
    assert_eq!(a01_bundle["entry"][0]["request"], patient["request"]);
    assert_eq!(a01_bundle["entry"][0]["fullUrl"], patient["fullUrl"]);
    assert_eq!(
        logs,
        ["no visit number (PV1-19) or account number (PID-18): Encounter not written"]
    );
}

#[test]
fn default_adt_script_keys_the_encounter_on_the_visit_number() {
    let bytes = std::fs::read(repo().join("scripts/tests/adt_a04_visit.hl7")).unwrap();
    let (bundle, _) = adt_bundle(&Message::parse(&bytes).unwrap());
    let patient_url = "Patient?identifier=urn:oid:1.2.276.0.76.3.1.999|4711";
    let encounter_url = "Encounter?identifier=urn:oid:2.16.840.1.113883.3.9999.1|V2024-0001";
    let patient = &bundle["entry"][0];
    assert_eq!(
        patient["request"],
        json!({"method": "PUT", "url": patient_url})
    );
    assert_eq!(
        patient["resource"]["name"],
        json!([{"use": "official", "family": "MUSTERMANN", "given": ["ERIKA"], "prefix": ["DR"]}])
    );
    assert_eq!(patient["resource"]["gender"], "female");
    assert_eq!(
        patient["resource"]["telecom"],
        json!([
            {"system": "phone", "value": "+49 30 1234567", "use": "mobile"},
            {"system": "email", "value": "erika@example.org"}
        ])
    );
    let encounter = &bundle["entry"][1];
    assert_eq!(
        encounter["request"],
        json!({"method": "PUT", "url": encounter_url})
    );
    let e = &encounter["resource"];
    assert_eq!(e["identifier"][0]["value"], "V2024-0001");
    assert_eq!(e["identifier"][0]["type"]["coding"][0]["code"], "VN");
    assert_eq!(e["status"], "arrived");
    assert_eq!(e["class"]["code"], "AMB");
    assert_eq!(e["subject"], json!({"reference": urn(patient_url)}));
    assert_eq!(e["period"], json!({"start": "2024-04-01T09:00:00+02:00"}));
}

#[test]
fn default_adt_script_skips_other_triggers_and_rejects_unidentified_patients() {
    let a20 = Message::parse(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A20|1|P|2.5.1\rPID|1||X^^^H^MR\r")
        .unwrap();
    assert!(
        matches!(adt(&a20), TransformOutcome::Skip { ref reason, .. } if reason.contains("does not map ADT^A20"))
    );
    let anon = Message::parse(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5.1\rPID|1||\r").unwrap();
    assert!(
        matches!(adt(&anon), TransformOutcome::Reject { ref reason, .. } if reason.contains("PID-3"))
    );
}

#[test]
fn a_script_keeps_its_function_resolution_cache_between_runs_and_drops_it_after_an_error() {
    let h = host();
    let script = h
        .compile_source(
            "t.rhai",
            r#"
            import "codes" as codes;
            // Same name and arity as a library function: each call must keep its own target.
            fn gender(code) { "mine:" + code }
            if msg.control_id == "" { throw "no control id" }
            #{ resourceType: "Basic", a: gender("F"), b: codes::gender("F"), c: msg.type }
            "#,
        )
        .unwrap();
    let cached = |s: &Script| s.caches.borrow().1.fn_resolution_caches_len();
    for run in 0..3 {
        let out = match h.run_transform(&script, &a01(), &ctx()).unwrap() {
            TransformOutcome::Output { output, .. } => output.to_value(),
            other => panic!("{other:?}"),
        };
        let r = &out["entry"][0]["resource"];
        assert_eq!(
            (r["a"].as_str(), r["b"].as_str(), r["c"].as_str()),
            (Some("mine:F"), Some("female"), Some("ADT^A01")),
            "run {run}"
        );
        assert_eq!(
            cached(&script),
            1,
            "one cache level is kept after run {run}"
        );
    }
    let no_control_id = Message::parse(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01||P|2.5.1\r").unwrap();
    let e = h
        .run_transform(&script, &no_control_id, &ctx())
        .unwrap_err();
    assert!(e.message.contains("no control id"), "{e}");
    assert_eq!(
        cached(&script),
        0,
        "an error starts the next run with an empty cache"
    );
    assert!(h.run_transform(&script, &a01(), &ctx()).is_ok());
    // Run by another host (whose functions are other closures), the script starts afresh.
    let other = host();
    assert!(other.run_transform(&script, &a01(), &ctx()).is_ok());
    assert_eq!(
        script.caches.borrow().0,
        other.id,
        "the cache now belongs to the other host"
    );
    assert!(h.run_transform(&script, &a01(), &ctx()).is_ok());
    assert_eq!(script.caches.borrow().0, h.id);
}

#[test]
fn an_entry_a_transaction_cannot_convert_names_the_element_under_resource() {
    let e = err(
        &host(),
        r#"let tx = transaction();
        tx.update(#{ resourceType: "Patient", name: [#{ family: || 1 }] }, "Patient?identifier=a|b");
        tx"#,
    );
    assert_eq!((e.file.as_str(), e.line), ("test.rhai", Some(2)), "{e}");
    assert!(
        e.message.contains(
            "cannot add the entry: a function pointer at .resource.name[0].family cannot be converted to JSON"
        ),
        "{e}"
    );
    // The same entry built as a map converts the same way, request first.
    let v = output(
        &host(),
        r#"let tx = transaction();
        tx.create(#{ resourceType: "Patient", id: "p1" }, "identifier=a|b");
        tx.add(create_entry(#{ resourceType: "Patient", id: "p1" }, "identifier=a|b"));
        tx"#,
    );
    let entries = v["entry"].as_array().unwrap();
    assert_eq!(entries[0], entries[1]);
    assert_eq!(
        entries[0]["request"],
        json!({"method": "POST", "url": "Patient", "ifNoneExist": "identifier=a|b"})
    );
    let keys: Vec<&String> = entries[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["fullUrl", "request", "resource"]);
}

#[test]
fn a_segment_reads_what_the_whole_path_reads() {
    let msg = Message::parse(
        "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5.1\r\
PID|1||X1^^^&2.16.840.1&ISO^PI~Y2^^^H^MR||O\\T\\BRIEN^MARY&ANN^B||\"\"\r\
OBX|1|NM|8867-4^HR^LN||72|/min\r\
OBX|2|ST|X^Y^L||a\\F\\b~c\r"
            .as_bytes(),
    )
    .unwrap();
    let v = eval_with(
        &host(),
        r#"
        let rels = ["1", "2", "3", "3.1", "3[2].4.1", "3[2]", "3[*].1", "5", "5.2.2", "7", "9", "60", "5.1.1"];
        let differ = [];
        let reads = 0;
        for s in msg.segments() {
            for r in rels {
                let whole = msg[`${s.name}[${s.index}]-${r}`];
                if s[r] != whole || s.get(r) != whole { differ.push(`${s.name}[${s.index}]-${r}`); }
                reads += 1;
            }
            if s[5] != msg[`${s.name}[${s.index}]-5`] { differ.push(`${s.name}[${s.index}]-5 (int)`); }
        }
        #{ differ: differ, reads: reads, sample: [msg.segment("PID")["5.2.2"], msg.segments("OBX")[1]["5"], msg.segment("MSH")[2]] }
        "#,
        &msg,
        &ctx(),
    );
    assert_eq!(v.get("differ"), None, "{v}");
    assert_eq!(v["reads"], json!(52));
    assert_eq!(v["sample"], json!(["ANN", "a|b", "^~\\&"]));
    let e = err(&host(), "msg.segment(\"PID\")[\"5.x\"]");
    assert!(e.message.contains("PID[1]-5.x"), "{e}");
}
