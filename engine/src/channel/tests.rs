use std::path::Path;

use super::*;

struct Dirs {
    _root: tempfile::TempDir,
    paths: ChannelPaths,
}

fn dirs() -> Dirs {
    let root = tempfile::tempdir().unwrap();
    let paths = ChannelPaths {
        channels_dir: root.path().join("channels"),
        scripts_dir: root.path().join("scripts"),
        limits: ScriptLimits::default(),
    };
    std::fs::create_dir_all(&paths.channels_dir).unwrap();
    std::fs::create_dir_all(paths.lib_dir()).unwrap();
    Dirs { _root: root, paths }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn channel_toml(name: &str, types: &str, priority: i32) -> String {
    format!(
        "name = \"{name}\"\npriority = {priority}\n[source]\nkind = \"mllp\"\n[match]\nmessage_type = [{types}]\n[transform]\nscript = \"scripts/{name}.rhai\"\n"
    )
}

const BUNDLE: &str = "#{resourceType: \"Bundle\", type: \"transaction\", entry: []}";

fn meta(kind: &str) -> MessageMeta {
    MessageMeta {
        message_type: Some(kind.into()),
        ..MessageMeta::default()
    }
}

#[test]
fn unknown_keys_and_bad_values_name_file_line_and_column() {
    let cases = [
        (
            "name = \"a\"\n[source]\nkind = \"mllp\"\nsurce = 1\n",
            4,
            "unknown field",
        ),
        (
            "name = \"a\"\n[source]\nkind = \"carrier-pigeon\"\n",
            3,
            "carrier-pigeon",
        ),
        (
            "name = \"a b\"\n[source]\nkind = \"mllp\"\n",
            1,
            "channel name",
        ),
        ("[source]\nkind = \"mllp\"\n", 1, "name"),
        ("name = \"a\"\n[source]\nkind = \"http\"\n", 2, "path"),
    ];
    for (text, line, needle) in cases {
        let err = ChannelDef::parse(Path::new("channels/a.toml"), text).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("channels/a.toml:{line}:")),
            "{shown}"
        );
        assert!(shown.contains(needle), "{shown}");
    }
}

#[test]
fn loads_good_channels_reports_broken_ones_and_routes_by_priority() {
    let d = dirs();
    let p = &d.paths;
    write(
        &p.channels_dir.join("adt.toml"),
        &channel_toml("adt", "\"ADT^*\"", 0),
    );
    write(&p.scripts_dir.join("adt.rhai"), BUNDLE);
    write(
        &p.channels_dir.join("a08.toml"),
        &channel_toml("a08", "\"ADT^A08\"", 10),
    );
    write(&p.scripts_dir.join("a08.rhai"), BUNDLE);
    write(
        &p.channels_dir.join("broken.toml"),
        &channel_toml("broken", "\"ORU^R01\"", 0),
    );
    write(&p.scripts_dir.join("broken.rhai"), "let x = ;\n");
    write(
        &p.channels_dir.join("off.toml"),
        &channel_toml("off", "\"ADT^A08\"", 99).replace("priority", "enabled = false\npriority"),
    );
    write(&p.scripts_dir.join("off.rhai"), BUNDLE);

    let (channels, report) = Channels::load(p.clone());
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(
        report.errors[0].contains("broken.rhai:1:"),
        "script error with file:line: {report:?}"
    );
    let set = channels.current();
    let names: Vec<&str> = set.channels.iter().map(|c| c.name()).collect();
    assert_eq!(names, vec!["off", "a08", "adt"], "priority order");

    let routed: Vec<String> = set
        .route(SourceKind::Mllp, "mllp", &meta("ADT^A08"))
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(routed, vec!["a08", "adt"], "disabled channels take nothing");
    assert!(set
        .route(SourceKind::Mllp, "mllp", &meta("ORU^R01"))
        .is_empty());
    assert!(set
        .route(SourceKind::Http, "http", &meta("ADT^A08"))
        .is_empty());
}

#[test]
fn a_broken_edit_keeps_the_running_revision_and_a_good_one_replaces_it() {
    let d = dirs();
    let p = &d.paths;
    write(
        &p.channels_dir.join("adt.toml"),
        &channel_toml("adt", "\"ADT^A01\"", 0),
    );
    write(&p.scripts_dir.join("adt.rhai"), BUNDLE);
    let (channels, report) = Channels::load(p.clone());
    assert!(report.errors.is_empty(), "{report:?}");
    let first = channels.current().get("adt").unwrap().revision.clone();

    write(&p.scripts_dir.join("adt.rhai"), "let broken = (;\n");
    let report = channels.reload();
    assert_eq!(report.errors.len(), 1);
    assert_eq!(
        channels.current().get("adt").unwrap().revision,
        first,
        "still running"
    );
    assert_eq!(
        channels.last_report().errors.len(),
        1,
        "the API can say why"
    );

    write(&p.scripts_dir.join("adt.rhai"), &format!("// v2\n{BUNDLE}"));
    let report = channels.reload();
    assert!(report.errors.is_empty());
    assert_eq!(report.updated, vec!["adt".to_string()]);
    assert_ne!(channels.current().get("adt").unwrap().revision, first);

    std::fs::remove_file(p.channels_dir.join("adt.toml")).unwrap();
    let report = channels.reload();
    assert_eq!(report.removed, vec!["adt".to_string()]);
    assert!(channels.current().get("adt").is_none());
}

#[test]
fn a_library_change_is_a_new_revision_and_the_fingerprint_moves() {
    let d = dirs();
    let p = &d.paths;
    write(
        &p.channels_dir.join("adt.toml"),
        &channel_toml("adt", "\"ADT^A01\"", 0),
    );
    write(&p.scripts_dir.join("adt.rhai"), BUNDLE);
    write(&p.lib_dir().join("util.rhai"), "fn one() { 1 }\n");
    let (channels, _) = Channels::load(p.clone());
    let before = (
        channels.current().get("adt").unwrap().revision.clone(),
        channels.fingerprint(),
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(
        &p.lib_dir().join("util.rhai"),
        "fn one() { 1 }\nfn two() { 2 }\n",
    );
    assert_ne!(channels.fingerprint(), before.1);
    channels.reload();
    assert_ne!(channels.current().get("adt").unwrap().revision, before.0);
}

#[test]
fn duplicate_channel_names_are_an_error() {
    let d = dirs();
    let p = &d.paths;
    write(
        &p.channels_dir.join("one.toml"),
        &channel_toml("same", "\"ADT^A01\"", 0),
    );
    write(
        &p.channels_dir.join("two.toml"),
        &channel_toml("same", "\"ADT^A01\"", 0),
    );
    write(&p.scripts_dir.join("same.rhai"), BUNDLE);
    let (channels, report) = Channels::load(p.clone());
    assert_eq!(channels.current().channels.len(), 1);
    assert!(report.errors[0].contains("also defined"), "{report:?}");
}
