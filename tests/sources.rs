//! End-to-end: file sources through the real binary. SFTP against a real OpenSSH sshd started
//! here on a loopback port (throwaway host and user keys), and a local folder source.
//!
//! Needs `/usr/sbin/sshd` and `ssh-keygen` (Debian: `apt-get install -y openssh-server`); a
//! missing sshd fails the test, it is never skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{adt, free_port, Engine};

/// How long a file source may take to notice and journal a file (polls are 200-300 ms here).
const WAIT: Duration = Duration::from_secs(15);

/// A throwaway OpenSSH server on 127.0.0.1, running as the current user.
struct Sshd {
    child: Child,
    port: u16,
    keys: PathBuf,
    log: PathBuf,
}

impl Sshd {
    fn start(keys: &Path) -> Sshd {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: the SFTP source tests need a real OpenSSH server \
             (Debian/Ubuntu: apt-get install -y openssh-server)"
        );
        for (file, comment) in [
            ("host_key", "host"),
            ("other_host_key", "impostor"),
            ("user_key", "orbiter"),
        ] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(keys.join(file))
                .status()
                .expect("ssh-keygen runs (package openssh-client)");
            assert!(status.success(), "ssh-keygen {file}");
        }
        std::fs::copy(keys.join("user_key.pub"), keys.join("authorized_keys")).unwrap();
        let config = keys.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\n\
                 HostKey {keys}/host_key\n\
                 AuthorizedKeysFile {keys}/authorized_keys\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PidFile none\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 Subsystem sftp internal-sftp\n\
                 LogLevel VERBOSE\n",
                keys = keys.display()
            ),
        )
        .unwrap();
        // As root, sshd wants its privilege separation directory (the package creates it at
        // boot, not at install); as another user this fails harmlessly and is not needed.
        let _ = std::fs::create_dir_all("/run/sshd");
        Sshd::spawn(keys, free_port())
    }

    /// Runs sshd with the configuration in `keys` on `port`; returns once it listens.
    fn spawn(keys: &Path, port: u16) -> Sshd {
        let log = keys.join("sshd.log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(keys.join("sshd_config"))
            .arg("-p")
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .expect("sshd starts");
        let mut sshd = Sshd {
            child,
            port,
            keys: keys.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = sshd.child.try_wait().unwrap() {
                panic!("sshd exited ({status}):\n{}", sshd.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return sshd;
            }
            assert!(
                Instant::now() < deadline,
                "sshd not listening:\n{}",
                sshd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A known_hosts line for this server with the public key in `pub_file`.
    fn known_hosts_line(&self, pub_file: &str) -> String {
        let key = std::fs::read_to_string(self.keys.join(pub_file)).unwrap();
        let mut parts = key.split_whitespace();
        let (kind, blob) = (parts.next().unwrap(), parts.next().unwrap());
        format!("[127.0.0.1]:{} {kind} {blob}\n", self.port)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn start(data: &Path, channels: &Path) -> Engine {
    let channels = channels.display().to_string();
    let scripts = common::repo_root().join("scripts").display().to_string();
    Engine::start(
        data,
        &[
            ("ORBITER_CHANNELS_DIR", channels.as_str()),
            ("ORBITER_SCRIPTS_DIR", scripts.as_str()),
        ],
    )
}

/// The transactions journaled with this control id.
async fn transactions(engine: &Engine, control_id: &str) -> Vec<serde_json::Value> {
    let (status, body) = engine
        .api(&format!("/api/transactions?control_id={control_id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

/// Waits until exactly one transaction with this control id is journaled; returns it.
async fn journaled_once(engine: &Engine, control_id: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let items = transactions(engine, control_id).await;
        if let Some(tx) = items.first() {
            assert_eq!(
                items.len(),
                1,
                "{control_id} journaled more than once: {items:?}"
            );
            return tx.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{control_id} was never journaled:\n{}",
            engine.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for(what: &str, engine: &Engine, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: timed out\n{}",
            engine.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Writes an HL7 message into `path` a segment at a time, every 100 ms for about 2.5 s, as a
/// slow upload would; returns the whole message.
fn grow_slowly(path: PathBuf, control_id: &str) -> std::thread::JoinHandle<Vec<u8>> {
    let first = adt(control_id);
    std::thread::spawn(move || {
        use std::io::Write;
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&first).unwrap();
        let mut whole = first;
        for i in 0..25 {
            std::thread::sleep(Duration::from_millis(100));
            let segment = format!("\rNTE|{i}||still uploading");
            file.write_all(segment.as_bytes()).unwrap();
            file.flush().unwrap();
            whole.extend_from_slice(segment.as_bytes());
        }
        whole
    })
}

/// The transaction's source, routing and status, as the API shows them.
fn assert_routed(tx: &serde_json::Value, listener: &str, channel: &str) {
    assert_eq!(tx["listener"], listener, "{tx}");
    assert_eq!(
        tx["channels"][0]["name"], channel,
        "routed to its own channel: {tx}"
    );
    assert_ne!(tx["status"], "failed", "{tx}");
}

#[tokio::test]
async fn sftp_source_takes_settled_files_from_a_trusted_server_once() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let sshd = Sshd::start(&keys);
    let remote = tmp.path().join("remote");
    let (inbox, keep, rogue, stranger) = (
        remote.join("inbox"),
        remote.join("keep"),
        remote.join("rogue"),
        remote.join("stranger"),
    );
    std::fs::write(
        keys.join("known_hosts"),
        sshd.known_hosts_line("host_key.pub"),
    )
    .unwrap();
    // Same host and port, another ed25519 key: a man in the middle as far as we can tell.
    std::fs::write(
        keys.join("impostor_known_hosts"),
        sshd.known_hosts_line("other_host_key.pub"),
    )
    .unwrap();
    std::fs::write(keys.join("empty_known_hosts"), "").unwrap();

    let channels = tmp.path().join("channels");
    std::fs::create_dir_all(&channels).unwrap();
    let user = current_user();
    let channel = |name: &str, dir: &Path, known_hosts: &str, extra: &str| {
        std::fs::write(
            channels.join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\n[source]\nkind = \"sftp\"\nhost = \"127.0.0.1\"\nport = {port}\n\
                 user = \"{user}\"\nkey_file = \"{keys}/user_key\"\nknown_hosts = \"{keys}/{known_hosts}\"\n\
                 dir = \"{dir}\"\nglob = [\"*.hl7\"]\npoll_ms = 300\n{extra}",
                port = sshd.port,
                keys = keys.display(),
                dir = dir.display(),
            ),
        )
        .unwrap();
    };
    channel("hie", &inbox, "known_hosts", "");
    channel("keep", &keep, "known_hosts", "after = \"leave\"\n");
    let purge = remote.join("purge");
    channel(
        "purge",
        &purge,
        "known_hosts",
        "after = \"delete\"\ndone_marker = \".ok\"\n",
    );
    channel("rogue", &rogue, "impostor_known_hosts", "");
    channel("stranger", &stranger, "empty_known_hosts", "");

    write(&inbox.join("a1.hl7"), &adt("SFTP-A1"));
    write(&inbox.join("notes.txt"), &adt("SFTP-NOTES"));
    write(&keep.join("k1.hl7"), &adt("SFTP-K1"));
    write(&purge.join("p1.hl7"), &adt("SFTP-P1"));
    write(&purge.join("p1.hl7.ok"), b"");
    write(&rogue.join("r1.hl7"), &adt("SFTP-R1"));
    write(&stranger.join("s1.hl7"), &adt("SFTP-S1"));

    let data = tmp.path().join("data");
    let mut engine = start(&data, &channels);

    // Journaled from the server, routed to its channel, then moved to processed/ there.
    let tx = journaled_once(&engine, "SFTP-A1").await;
    assert_routed(&tx, "sftp:hie", "hie");
    assert!(
        tx["peer"].as_str().unwrap_or("").starts_with("sftp://"),
        "{tx}"
    );
    wait_for("a1.hl7 moved to processed/", &engine, || {
        inbox.join("processed/a1.hl7").exists() && !inbox.join("a1.hl7").exists()
    })
    .await;
    assert_eq!(
        std::fs::read(inbox.join("processed/a1.hl7")).unwrap(),
        adt("SFTP-A1")
    );

    // Leave mode: journaled, and the file stays where it is.
    let tx = journaled_once(&engine, "SFTP-K1").await;
    assert_routed(&tx, "sftp:keep", "keep");
    assert!(keep.join("k1.hl7").exists());

    // Delete mode with a done marker: journaled, then the file and its marker are removed.
    journaled_once(&engine, "SFTP-P1").await;
    wait_for(
        "p1.hl7 and its marker deleted on the server",
        &engine,
        || !purge.join("p1.hl7").exists() && !purge.join("p1.hl7.ok").exists(),
    )
    .await;

    // A file still being uploaded is not taken until it stops growing.
    let grower = grow_slowly(inbox.join("grow.hl7"), "SFTP-G1");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        transactions(&engine, "SFTP-G1").await.is_empty(),
        "a growing file was taken"
    );
    assert!(inbox.join("grow.hl7").exists());
    let whole = grower.join().unwrap();
    let tx = journaled_once(&engine, "SFTP-G1").await;
    assert_eq!(
        tx["size"],
        whole.len(),
        "the whole file, not a prefix: {tx}"
    );

    // Files outside the glob stay; servers with an unknown or a changed host key are refused.
    assert!(inbox.join("notes.txt").exists());
    assert!(transactions(&engine, "SFTP-NOTES").await.is_empty());
    assert!(transactions(&engine, "SFTP-R1").await.is_empty());
    assert!(transactions(&engine, "SFTP-S1").await.is_empty());
    assert!(rogue.join("r1.hl7").exists() && stranger.join("s1.hl7").exists());
    let log = engine.log();
    assert!(
        log.contains("sftp:rogue") && log.contains("differs from the one recorded"),
        "a changed host key is refused and said so:\n{log}"
    );
    assert!(
        log.contains("sftp:stranger") && log.contains("is not in"),
        "an unknown host key is refused and said so:\n{log}"
    );
    assert!(
        sshd.log().contains("Accepted publickey"),
        "logged in with the user key:\n{}",
        sshd.log()
    );
    let metrics = engine.metrics().await;
    assert!(
        metrics
            .contains("orbiter_source_files_total{listener=\"sftp:hie\",outcome=\"ingested\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("orbiter_source_errors_total{listener=\"sftp:rogue\"}"),
        "{metrics}"
    );

    // A restart takes neither the left file nor the moved ones again; and when the server is
    // down at first, the source keeps trying and catches up once it is back.
    assert_eq!(engine.stop().code(), Some(0));
    let port = sshd.port;
    drop(sshd);
    let log_before = engine.log().len();
    engine.restart();
    write(&inbox.join("a2.hl7"), &adt("SFTP-A2"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = engine.log()[log_before..].to_string();
    assert!(
        log.contains("file source poll failed")
            && log.contains(&format!("connecting to 127.0.0.1:{port}")),
        "a server that is down is retried and said so:\n{log}"
    );
    assert!(transactions(&engine, "SFTP-A2").await.is_empty());
    let _sshd = Sshd::spawn(&keys, port);
    journaled_once(&engine, "SFTP-A2").await;
    assert!(engine.log().contains("file source available again"));
    // Both pollers started together; give `keep` a few more polls than `hie` needed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for control_id in ["SFTP-A1", "SFTP-K1", "SFTP-G1"] {
        assert_eq!(
            transactions(&engine, control_id).await.len(),
            1,
            "{control_id} after a restart:\n{}",
            engine.log()
        );
    }
    assert!(keep.join("k1.hl7").exists());
    assert!(
        !engine.log().contains("PASSWORD") && !engine.log().contains("PRIVATE KEY"),
        "no secrets in the log"
    );
}

#[tokio::test]
async fn dir_source_moves_deletes_or_leaves_files_and_never_takes_one_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let (drop_dir, keep, marked) = (
        tmp.path().join("drop"),
        tmp.path().join("keep"),
        tmp.path().join("marked"),
    );
    for dir in [&drop_dir, &keep, &marked] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let channels = tmp.path().join("channels");
    std::fs::create_dir_all(&channels).unwrap();
    let channel = |name: &str, dir: &Path, extra: &str| {
        std::fs::write(
            channels.join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\n[source]\nkind = \"dir\"\ndir = \"{}\"\npoll_ms = 200\n{extra}",
                dir.display()
            ),
        )
        .unwrap();
    };
    channel("drop", &drop_dir, "glob = [\"*.hl7\"]\n");
    channel("keep", &keep, "after = \"leave\"\nformat = \"hl7v2\"\n");
    channel(
        "marked",
        &marked,
        "after = \"delete\"\ndone_marker = \".done\"\n",
    );
    // `processed_dir` names a file: every move fails.
    let blocked = tmp.path().join("blocked");
    write(&blocked.join("not-a-dir"), b"");
    channel(
        "blocked",
        &blocked,
        "processed_dir = \"not-a-dir\"\nglob = [\"*.hl7\"]\n",
    );
    write(&blocked.join("b1.hl7"), &adt("DIR-B1"));
    write(&blocked.join("b2.hl7"), &adt("DIR-B2"));

    write(&drop_dir.join("d1.HL7"), &adt("DIR-D1"));
    write(&drop_dir.join("bad.hl7"), b"this is not HL7 at all");
    write(&keep.join("k1.dat"), &adt("DIR-K1"));
    write(&marked.join("m1.hl7"), &adt("DIR-M1"));

    // As a crash after the ledger entry and before the move leaves it: on start the move is
    // finished, and the file is not journaled again.
    let crashed = drop_dir.join("crashed.hl7");
    write(&crashed, &adt("DIR-C1"));
    let meta = std::fs::metadata(&crashed).unwrap();
    let mtime_ms = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let key = format!(
        "dir:drop:{}/crashed.hl7:{}:{mtime_ms}",
        drop_dir.display(),
        meta.len()
    );
    let data = tmp.path().join("data");
    write(
        &data.join("sources/dir-drop/ledger.json"),
        serde_json::json!({ key: "processed" })
            .to_string()
            .as_bytes(),
    );

    let mut engine = start(&data, &channels);

    let tx = journaled_once(&engine, "DIR-D1").await;
    assert_routed(&tx, "dir:drop", "drop");
    wait_for("d1.HL7 moved to processed/", &engine, || {
        drop_dir.join("processed/d1.HL7").exists() && !drop_dir.join("d1.HL7").exists()
    })
    .await;
    // Journaled as failed (kept for audit), and the file goes to error/.
    wait_for("bad.hl7 moved to error/", &engine, || {
        drop_dir.join("error/bad.hl7").exists()
    })
    .await;
    // Someone must look at it: named at warn, with why.
    assert!(
        engine
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("file refused") && l.contains("bad.hl7")),
        "{}",
        engine.log()
    );
    wait_for("crashed.hl7 moved without journaling", &engine, || {
        drop_dir.join("processed/crashed.hl7").exists()
    })
    .await;
    assert!(transactions(&engine, "DIR-C1").await.is_empty());

    // `format` set: an extension that says nothing is fine; leave mode keeps the file.
    let tx = journaled_once(&engine, "DIR-K1").await;
    assert_routed(&tx, "dir:keep", "keep");
    assert!(keep.join("k1.dat").exists());

    // A file that cannot be moved is journaled once, stays, and holds up no other file.
    journaled_once(&engine, "DIR-B1").await;
    journaled_once(&engine, "DIR-B2").await;
    assert!(blocked.join("b1.hl7").exists() && blocked.join("b2.hl7").exists());

    // Without its done marker a file waits, however settled it looks.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(transactions(&engine, "DIR-M1").await.is_empty());
    write(&marked.join("m1.hl7.done"), b"");
    let tx = journaled_once(&engine, "DIR-M1").await;
    assert_routed(&tx, "dir:marked", "marked");
    wait_for("m1.hl7 and its marker deleted", &engine, || {
        !marked.join("m1.hl7").exists() && !marked.join("m1.hl7.done").exists()
    })
    .await;

    // A file still being written is not taken until it stops growing.
    let grower = grow_slowly(drop_dir.join("grow.hl7"), "DIR-G1");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        transactions(&engine, "DIR-G1").await.is_empty(),
        "a growing file was taken"
    );
    let whole = grower.join().unwrap();
    let tx = journaled_once(&engine, "DIR-G1").await;
    assert_eq!(
        tx["size"],
        whole.len(),
        "the whole file, not a prefix: {tx}"
    );

    // Channel reloads: a new dir channel starts polling without a restart.
    let late = tmp.path().join("late");
    write(&late.join("l1.hl7"), &adt("DIR-L1"));
    channel("late", &late, "");
    let tx = journaled_once(&engine, "DIR-L1").await;
    assert_routed(&tx, "dir:late", "late");

    // A restart (even a SIGKILL) takes nothing twice; the left file stays left.
    engine.kill();
    engine.restart();
    write(&drop_dir.join("d2.hl7"), &adt("DIR-D2"));
    journaled_once(&engine, "DIR-D2").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for control_id in [
        "DIR-D1", "DIR-K1", "DIR-M1", "DIR-G1", "DIR-B1", "DIR-B2", "DIR-L1",
    ] {
        assert_eq!(
            transactions(&engine, control_id).await.len(),
            1,
            "{control_id} after a restart:\n{}",
            engine.log()
        );
    }
    assert!(keep.join("k1.dat").exists());
    assert_eq!(
        engine.log().matches("journaled file not moved").count(),
        4,
        "each unmovable file is reported once per run, not on every poll"
    );
}
