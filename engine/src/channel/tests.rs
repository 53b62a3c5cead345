use std::path::Path;

use super::*;

/// A channels dir and a scripts dir (with an empty `lib/`) in a temporary root; also used by
/// `check`'s tests.
pub(super) struct Dirs {
    pub(super) _root: tempfile::TempDir,
    pub(super) paths: ChannelPaths,
}

pub(super) fn dirs() -> Dirs {
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

/// Writes channel `name` (see [`channel_toml`]) and its script.
fn add_channel(p: &ChannelPaths, name: &str, types: &str, priority: i32, script: &str) {
    write(
        &p.channels_dir.join(format!("{name}.toml")),
        &channel_toml(name, types, priority),
    );
    write(&p.scripts_dir.join(format!("{name}.rhai")), script);
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
        (
            "name = \"a\"\n[source]\nkind = \"mllp\"\n[transform]\nscript = \"t.rhai\"\n\
             [[destination]]\nkind = \"http\"\nurl = \"http://x\"\ntls_ca = \"ca.pem\"\n",
            9,
            "for an mllp destination",
        ),
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
    add_channel(p, "adt", "\"ADT^*\"", 0, BUNDLE);
    add_channel(p, "a08", "\"ADT^A08\"", 10, BUNDLE);
    add_channel(p, "broken", "\"ORU^R01\"", 0, "let x = ;\n");
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
    // ... but are named when a message finds no channel because of them.
    let off = set.disabled_takers(SourceKind::Mllp, "mllp", &meta("ADT^A08"));
    assert_eq!(off, ["off"]);
    assert!(set
        .disabled_takers(SourceKind::Mllp, "mllp", &meta("ADT^A01"))
        .is_empty());
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
    add_channel(p, "adt", "\"ADT^A01\"", 0, BUNDLE);
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
    add_channel(p, "adt", "\"ADT^A01\"", 0, BUNDLE);
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

/// A channel's script may live in a subfolder of the scripts dir; editing it in place (which
/// changes neither the folder's entries nor its mtime) must move the fingerprint the file
/// watch polls, or the engine keeps running the old revision without a word.
#[test]
fn an_edit_to_a_script_in_a_subfolder_moves_the_fingerprint() {
    let d = dirs();
    let p = &d.paths;
    std::fs::create_dir_all(p.scripts_dir.join("lab/deep")).unwrap();
    write(
        &p.channels_dir.join("lab.toml"),
        "name = \"lab\"\n[source]\nkind = \"mllp\"\n[transform]\nscript = \"lab/deep/oru.rhai\"\n",
    );
    write(&p.scripts_dir.join("lab/deep/oru.rhai"), BUNDLE);
    let (channels, report) = Channels::load(p.clone());
    assert!(report.errors.is_empty(), "{report:?}");
    let before = (
        channels.current().get("lab").unwrap().revision.clone(),
        channels.fingerprint(),
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(
        &p.scripts_dir.join("lab/deep/oru.rhai"),
        &format!("{BUNDLE}\n// edited\n"),
    );
    assert_ne!(channels.fingerprint(), before.1, "the edit went unnoticed");
    channels.reload();
    assert_ne!(channels.current().get("lab").unwrap().revision, before.0);
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
    // At start the first file by name runs, and the error names both files the right way.
    let one = p.channels_dir.join("one.toml");
    let two = p.channels_dir.join("two.toml");
    assert_eq!(channels.current().get("same").unwrap().file, one);
    assert_eq!(
        report.errors,
        [format!(
            "{}: channel `same` is also defined in {}, which is the one loaded: rename one",
            two.display(),
            one.display()
        )]
    );

    // A file dropped beside the running one, sorting first and mapping other types, does not
    // take the name over; it is the one refused.
    write(
        &p.channels_dir.join("aaa.toml"),
        &channel_toml("same", "\"ADT^A99\"", 0),
    );
    let report = channels.reload();
    assert_eq!(channels.current().get("same").unwrap().file, one);
    assert!(
        report.errors.iter().any(|e| e.starts_with(&format!(
            "{}: channel `same` is also defined in {}",
            p.channels_dir.join("aaa.toml").display(),
            one.display()
        ))),
        "{report:?}"
    );
    assert!(report.updated.is_empty(), "{report:?}");
}

#[test]
fn file_sources_are_validated_with_file_and_line() {
    let sftp = "name = \"hie\"\n[source]\nkind = \"sftp\"\n";
    let cases = [
        ("name = \"a\"\n[source]\nkind = \"dir\"\n", 2, "needs a `dir`"),
        (
            "name = \"a\"\n[source]\nkind = \"dir\"\ndir = \"/in\"\nhost = \"x\"\n",
            5,
            "`host` is for sftp sources",
        ),
        (
            "name = \"a\"\n[source]\nkind = \"mllp\"\nglob = [\"*.hl7\"]\n",
            4,
            "`glob` is for dir and sftp sources",
        ),
        (
            "name = \"a\"\n[source]\nkind = \"dir\"\ndir = \"/in\"\nafter = \"shred\"\n",
            5,
            "shred",
        ),
        (
            "name = \"a\"\n[source]\nkind = \"dir\"\ndir = \"/in\"\nglob = [\"sub/*.hl7\"]\n",
            5,
            "no `/`",
        ),
        (
            "name = \"a\"\n[source]\nkind = \"dir\"\ndir = \"/in\"\nlistener = \"x\"\n",
            5,
            "its own listener",
        ),
        (&format!("{sftp}dir = \"/in\"\nuser = \"u\"\nkey_file = \"k\"\n"), 2, "`host`"),
        (&format!("{sftp}dir = \"/in\"\nhost = \"h\"\nkey_file = \"k\"\n"), 2, "`user`"),
        (
            &format!("{sftp}dir = \"/in\"\nhost = \"h\"\nuser = \"u\"\n"),
            2,
            "never written in channel files",
        ),
        (
            &format!("{sftp}dir = \"/in\"\nhost = \"h\"\nuser = \"u\"\nkey_file = \"k\"\npassword_env = \"P\"\n"),
            7,
            "only one of",
        ),
        (
            &format!("{sftp}dir = \"/in\"\nhost = \"h\"\nuser = \"u\"\npassword = \"hunter2\"\n"),
            7,
            "unknown field",
        ),
    ];
    for (text, line, needle) in cases {
        let err = ChannelDef::parse(Path::new("channels/a.toml"), text).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("channels/a.toml:{line}:")),
            "{text}\n=> {shown}"
        );
        assert!(shown.contains(needle), "{text}\n=> {shown}");
    }
    let good = format!(
        "{sftp}dir = \"/in\"\nhost = \"h\"\nport = 2222\nuser = \"u\"\npassword_env = \"HIE_PW\"\n\
         known_hosts = \"/etc/orbiter/known_hosts\"\nafter = \"leave\"\nformat = \"hl7v2\"\n"
    );
    let def = ChannelDef::parse(Path::new("channels/hie.toml"), &good).unwrap();
    assert_eq!(def.source.after, def::AfterAction::Leave);
    assert_eq!(def.listener_name().as_deref(), Some("sftp:hie"));
}

#[test]
fn a_file_source_channel_takes_only_its_own_files() {
    let d = dirs();
    let p = &d.paths;
    for name in ["lab", "hie"] {
        write(
            &p.channels_dir.join(format!("{name}.toml")),
            &format!("name = \"{name}\"\n[source]\nkind = \"dir\"\ndir = \"/in/{name}\"\n"),
        );
    }
    add_channel(p, "adt", "\"ADT^*\"", 0, BUNDLE);
    let (channels, report) = Channels::load(p.clone());
    assert!(report.errors.is_empty(), "{report:?}");
    let set = channels.current();
    let names = |kind, listener| -> Vec<String> {
        set.route(kind, listener, &meta("ADT^A01"))
            .iter()
            .map(|c| c.name().to_string())
            .collect()
    };
    assert_eq!(names(SourceKind::Dir, "dir:lab"), ["lab"]);
    assert_eq!(names(SourceKind::Dir, "dir:hie"), ["hie"]);
    assert!(names(SourceKind::Dir, "dir:other").is_empty());
    assert!(
        names(SourceKind::Sftp, "sftp:lab").is_empty(),
        "kind matters"
    );
    assert_eq!(
        names(SourceKind::Mllp, "mllp"),
        ["adt"],
        "MLLP routing unchanged"
    );
}

#[test]
fn a_script_error_is_shown_once_through_anyhow() {
    let d = dirs();
    let p = &d.paths;
    let host = ScriptHost::new(&p.lib_dir(), p.limits.clone()).unwrap();
    write(&p.scripts_dir.join("x.rhai"), "let a = b;\n");
    let text = "name = \"x\"\n[source]\nkind = \"mllp\"\n[transform]\nscript = \"x.rhai\"\n";
    let err = load_channel_text(&p.channels_dir.join("x.toml"), text, p, &host, "lib").unwrap_err();
    // `main` prints errors with `{:#}`, which appends every source in the chain.
    let shown = format!("{:#}", anyhow::Error::from(err));
    assert_eq!(shown.matches("x.rhai:1:").count(), 1, "{shown}");
}

#[test]
fn a_missing_script_is_reported_at_its_script_key() {
    let d = dirs();
    let p = &d.paths;
    let host = ScriptHost::new(&p.lib_dir(), p.limits.clone()).unwrap();
    write(&p.scripts_dir.join("here.rhai"), "true");
    let file = p.channels_dir.join("a.toml");
    // The filter exists, the transform does not: the error points at the second `script`.
    let text = "name = \"a\"\n[source]\nkind = \"mllp\"\n[filter]\nscript = \"here.rhai\"\n\
                [transform]\n  script = \"scripts/nope.rhai\"\n";
    let err = load_channel_text(&file, text, p, &host, "lib").unwrap_err();
    let shown = err.to_string();
    let looked_for = p.scripts_dir.join("nope.rhai");
    assert_eq!(
        shown,
        format!(
            "{}:7:3: the transform script does not exist (looked for {})",
            file.display(),
            looked_for.display()
        )
    );
    assert!(matches!(err, ChannelError::Definition { .. }), "{err:?}");

    // A filter written inline (`filter = { script = ... }`) is located too.
    let text = "name = \"a\"\nfilter = { script = \"gone.rhai\" }\n[source]\nkind = \"mllp\"\n";
    let shown = load_channel_text(&file, text, p, &host, "lib")
        .unwrap_err()
        .to_string();
    assert!(
        shown.starts_with(&format!("{}:2:12: the filter script", file.display())),
        "{shown}"
    );
}

/// A script path outside the scripts dir is refused before anything is read: a channel put
/// through the admin API must not have a host file read and quoted back in an error.
#[test]
fn a_script_outside_the_scripts_dir_is_refused_unread() {
    let d = dirs();
    let p = &d.paths;
    let host = ScriptHost::new(&p.lib_dir(), p.limits.clone()).unwrap();
    let file = p.channels_dir.join("t.toml");
    let secret = d.paths.channels_dir.join("secret.rhai");
    write(&secret, "hunter2");
    for script in [
        secret.display().to_string(),
        "../channels/secret.rhai".to_string(),
        "sub/../../channels/secret.rhai".to_string(),
    ] {
        let text = format!(
            "name = \"t\"\n[source]\nkind = \"mllp\"\n[transform]\nscript = \"{script}\"\n"
        );
        let shown = load_channel_text(&file, &text, p, &host, "lib")
            .unwrap_err()
            .to_string();
        assert!(
            shown.contains(":5:1: [transform] script") && shown.contains("no `..`"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

/// At start, a library file that does not compile fails the channels that import it, and no
/// other. Once channels run, a library that breaks keeps every channel as it runs (workers
/// build their hosts from the library on disk) until it is fixed.
#[test]
fn a_broken_library_file_fails_only_the_channels_importing_it() {
    let d = dirs();
    let p = &d.paths;
    add_channel(p, "adt", "\"ADT^A01\"", 0, BUNDLE);
    write(
        &p.channels_dir.join("oru.toml"),
        &channel_toml("oru", "\"ORU^R01\"", 0),
    );
    write(
        &p.scripts_dir.join("oru.rhai"),
        &format!("import \"shared\" as s;\n{BUNDLE}"),
    );
    write(&p.lib_dir().join("shared.rhai"), "fn f() { 1 }");
    write(&p.lib_dir().join("unused.rhai"), "fn x( {\n");
    let (channels, report) = Channels::load(p.clone());
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(report.errors[0].contains("unused.rhai:"), "{report:?}");
    let set = channels.current();
    assert!(set.get("adt").is_some() && set.get("oru").is_some());
    let oru = set.get("oru").unwrap().revision.clone();

    let adt = set.get("adt").unwrap().revision.clone();

    // The imported file breaks while they run: both keep running as they were, and the
    // reload says why.
    write(&p.lib_dir().join("shared.rhai"), "fn f( {\n");
    write(&p.scripts_dir.join("adt.rhai"), &format!("// v2\n{BUNDLE}"));
    let report = channels.reload();
    assert!(
        report.errors.iter().any(|e| e.contains("shared.rhai:")),
        "{report:?}"
    );
    assert!(report.updated.is_empty(), "{report:?}");
    assert_eq!(channels.current().get("oru").unwrap().revision, oru);
    assert_eq!(channels.current().get("adt").unwrap().revision, adt);
    // A channel put through the API meanwhile is refused with the library's error.
    let text = channel_toml("new", "\"ADT^A02\"", 0);
    write(&p.scripts_dir.join("new.rhai"), BUNDLE);
    let err = channels
        .compile(&p.channels_dir.join("new.toml"), &text)
        .unwrap_err();
    assert!(err.to_string().contains("shared.rhai:"), "{err}");

    // Fixed: everything reloads.
    write(&p.lib_dir().join("shared.rhai"), "fn f() { 2 }");
    write(&p.lib_dir().join("unused.rhai"), "fn x() { 1 }");
    let report = channels.reload();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.updated.len(), 2, "{report:?}");
}
