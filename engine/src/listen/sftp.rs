//! The SFTP transport of file sources (`kind = "sftp"`): a directory on a partner's server,
//! reached with russh + russh-sftp (pure Rust, no libssh).
//!
//! - The server's host key must be in the `known_hosts` file (OpenSSH format, hashed names
//!   too); an unknown key is refused unless `trust_unknown_host` (then it is added), and a key
//!   that differs from the recorded one is always refused.
//! - Authentication: an OpenSSH private key file (ed25519 preferred), or a password read from
//!   an environment variable or a file at each connect. Passwords never appear in errors/logs.
//! - One connection is kept between polls; after any error it is dropped and the next poll
//!   reconnects (the poller backs off while the server stays down).
//! - Files are downloaded into the source's spool before being journaled, and their size is
//!   checked against the listing, so a file rewritten meanwhile is left for a later poll.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::StatusCode;

use super::files::{unique_name, Fetched, FileStore, ListedFile, SourceError};
use crate::channel::def::SourceDef;

/// Giving up on a server that accepts TCP but does not finish the SSH handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Keeps the idle connection between polls alive through NAT and firewalls.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// How the source logs in. The password itself is read at connect time, never stored here.
#[derive(Debug, Clone)]
enum Auth {
    KeyFile(PathBuf),
    PasswordEnv(String),
    PasswordFile(PathBuf),
}

pub struct SftpStore {
    host: String,
    port: u16,
    user: String,
    auth: Auth,
    known_hosts: Option<PathBuf>,
    trust_unknown_host: bool,
    dir: String,
    connection: Option<Connection>,
}

struct Connection {
    /// Kept so that the SSH session lives as long as the SFTP channel.
    _session: client::Handle<HostKeyCheck>,
    sftp: SftpSession,
}

impl SftpStore {
    /// From a validated `[source]` (host, user, dir and one auth method are set).
    pub fn new(source: &SourceDef) -> Result<SftpStore, SourceError> {
        let auth = match (
            &source.key_file,
            &source.password_env,
            &source.password_file,
        ) {
            (Some(key), _, _) => Auth::KeyFile(key.clone()),
            (None, Some(var), _) => Auth::PasswordEnv(var.clone()),
            (None, None, Some(file)) => Auth::PasswordFile(file.clone()),
            (None, None, None) => {
                return Err(SourceError::Credentials("no key_file or password".into()))
            }
        };
        Ok(SftpStore {
            host: source.host.clone().unwrap_or_default(),
            port: source.port.unwrap_or(22),
            user: source.user.clone().unwrap_or_default(),
            auth,
            known_hosts: source.known_hosts.clone(),
            trust_unknown_host: source.trust_unknown_host,
            dir: source.dir.clone().unwrap_or_default(),
            connection: None,
        })
    }

    fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `name` in the watched directory, or `to_dir` resolved against it.
    fn path(&self, name: &str) -> String {
        if name.starts_with('/') || self.dir.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.dir.trim_end_matches('/'))
        }
    }

    fn sftp_error(
        &self,
        op: &'static str,
        path: &str,
        e: russh_sftp::client::error::Error,
    ) -> SourceError {
        SourceError::Sftp {
            server: self.server(),
            op,
            path: path.to_string(),
            reason: e.to_string(),
        }
    }

    /// The open SFTP session, connecting (and authenticating) first if needed.
    async fn sftp(&mut self) -> Result<&SftpSession, SourceError> {
        if self.connection.is_none() {
            let connection = self.connect().await?;
            self.connection = Some(connection);
        }
        Ok(&self.connection.as_ref().expect("just connected").sftp)
    }

    async fn connect(&self) -> Result<Connection, SourceError> {
        let server = self.server();
        let refusal = Arc::new(Mutex::new(None));
        let handler = HostKeyCheck {
            host: self.host.clone(),
            port: self.port,
            known_hosts: self.known_hosts.clone(),
            trust_unknown_host: self.trust_unknown_host,
            refusal: refusal.clone(),
        };
        let config = Arc::new(client::Config {
            keepalive_interval: Some(KEEPALIVE),
            ..client::Config::default()
        });
        let connecting = client::connect(config, (self.host.as_str(), self.port), handler);
        let mut session = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => {
                return Err(SourceError::Connect {
                    server,
                    reason: "timed out".into(),
                })
            }
            Ok(Err(e)) => {
                let refused = refusal.lock().expect("refusal lock").take();
                return Err(match refused {
                    Some(reason) => SourceError::HostKey { server, reason },
                    None => SourceError::Connect {
                        server,
                        reason: e.to_string(),
                    },
                });
            }
            Ok(Ok(session)) => session,
        };
        let connect_error = |e: russh::Error| SourceError::Connect {
            server: self.server(),
            reason: e.to_string(),
        };
        let result = match &self.auth {
            Auth::KeyFile(path) => {
                let key = russh::keys::load_secret_key(path, None).map_err(|e| {
                    SourceError::Credentials(format!("key file {}: {e}", path.display()))
                })?;
                let hash = session
                    .best_supported_rsa_hash()
                    .await
                    .map_err(connect_error)?
                    .flatten();
                session
                    .authenticate_publickey(
                        self.user.clone(),
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await
            }
            Auth::PasswordEnv(_) | Auth::PasswordFile(_) => {
                let password = self.password()?;
                session
                    .authenticate_password(self.user.clone(), password)
                    .await
            }
        }
        .map_err(connect_error)?;
        if !result.success() {
            return Err(SourceError::Auth {
                server,
                user: self.user.clone(),
                detail: match &self.auth {
                    Auth::KeyFile(path) => format!(" with key {}", path.display()),
                    Auth::PasswordEnv(var) => format!(" with the password in ${var}"),
                    Auth::PasswordFile(file) => {
                        format!(" with the password in {}", file.display())
                    }
                },
            });
        }
        let channel = session
            .channel_open_session()
            .await
            .map_err(connect_error)?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(connect_error)?;
        let sftp = SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| self.sftp_error("start", "", e))?;
        tracing::info!(server = %server, user = %self.user, "sftp connected");
        Ok(Connection {
            _session: session,
            sftp,
        })
    }

    fn password(&self) -> Result<String, SourceError> {
        match &self.auth {
            Auth::PasswordEnv(var) => std::env::var(var).map_err(|_| {
                SourceError::Credentials(format!("environment variable {var} is not set"))
            }),
            Auth::PasswordFile(file) => std::fs::read_to_string(file)
                .map(|p| p.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| SourceError::Credentials(format!("{}: {e}", file.display()))),
            Auth::KeyFile(_) => Err(SourceError::Credentials("no password configured".into())),
        }
    }
}

/// The server's status for a request (no such file, permission denied...); `None` when the
/// request failed for want of a connection.
fn status_code(e: &russh_sftp::client::error::Error) -> Option<StatusCode> {
    match e {
        russh_sftp::client::error::Error::Status(status) => Some(status.status_code),
        _ => None,
    }
}

impl FileStore for SftpStore {
    fn describe(&self) -> String {
        format!(
            "sftp://{}@{}:{}/{}",
            self.user,
            self.host,
            self.port,
            self.dir.trim_start_matches('/')
        )
    }

    async fn list(&mut self) -> Result<Vec<ListedFile>, SourceError> {
        let dir = if self.dir.is_empty() {
            ".".to_string()
        } else {
            self.dir.clone()
        };
        // A connection kept since the last poll may have been closed by the server meanwhile
        // (idle timeouts): one fresh try before calling the source unavailable.
        let reused = self.connection.is_some();
        let entries = match self.sftp().await?.read_dir(dir.clone()).await {
            Ok(entries) => entries,
            Err(e) if reused && status_code(&e).is_none() => {
                tracing::debug!(server = %self.server(), error = %e, "sftp connection lost; reconnecting");
                self.connection = None;
                match self.sftp().await?.read_dir(dir.clone()).await {
                    Ok(entries) => entries,
                    Err(e) => return Err(self.sftp_error("listing", &dir, e)),
                }
            }
            Err(e) => return Err(self.sftp_error("listing", &dir, e)),
        };
        Ok(entries
            .filter_map(|entry| {
                let meta = entry.metadata();
                // readdir's attributes are lstat's: links and directories are skipped.
                meta.is_regular().then(|| ListedFile {
                    name: entry.file_name(),
                    size: meta.len(),
                    modified_ms: meta.mtime.map(|s| s as i64 * 1000).unwrap_or(0),
                })
            })
            .collect())
    }

    async fn fetch(&mut self, file: &ListedFile, spool: &Path) -> Result<Fetched, SourceError> {
        let remote_path = self.path(&file.name);
        let local_path = spool.join(&file.name);
        let mut remote = match self.sftp().await?.open(remote_path.clone()).await {
            Ok(remote) => remote,
            Err(e) => {
                return Err(match status_code(&e) {
                    Some(StatusCode::NoSuchFile) => SourceError::Gone {
                        name: file.name.clone(),
                    },
                    Some(StatusCode::PermissionDenied) => SourceError::Unreadable {
                        name: file.name.clone(),
                        reason: e.to_string(),
                    },
                    _ => self.sftp_error("opening", &remote_path, e),
                })
            }
        };
        let io_error = |what: String| move |source| SourceError::Io { what, source };
        let mut local = tokio::fs::File::create(&local_path)
            .await
            .map_err(io_error(format!("creating {}", local_path.display())))?;
        // An error here is the connection's or the local disk's: retried on the next poll.
        let copied = tokio::io::copy(&mut remote, &mut local)
            .await
            .map_err(|e| SourceError::Sftp {
                server: self.server(),
                op: "downloading",
                path: remote_path.clone(),
                reason: e.to_string(),
            })?;
        drop(remote);
        if copied != file.size {
            let _ = tokio::fs::remove_file(&local_path).await;
            return Err(SourceError::Changed {
                name: file.name.clone(),
            });
        }
        Ok(Fetched {
            path: local_path,
            spooled: true,
        })
    }

    async fn move_to(&mut self, name: &str, to_dir: &str) -> Result<(), SourceError> {
        let from = self.path(name);
        let target_dir = self.path(to_dir);
        let sftp = self.sftp().await?;
        if !sftp.try_exists(target_dir.clone()).await.unwrap_or(false) {
            if let Err(e) = sftp.create_dir(target_dir.clone()).await {
                return Err(self.sftp_error("creating", &target_dir, e));
            }
        }
        let sftp = self.sftp().await?;
        // OpenSSH's rename does not replace an existing file: take a new name then.
        let mut target = format!("{target_dir}/{name}");
        if sftp.try_exists(target.clone()).await.unwrap_or(false) {
            target = format!("{target_dir}/{}", unique_name(name));
        }
        match sftp.rename(from.clone(), target.clone()).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.sftp_error("renaming", &format!("{from} to {target}"), e)),
        }
    }

    async fn remove(&mut self, name: &str) -> Result<(), SourceError> {
        let path = self.path(name);
        match self.sftp().await?.remove_file(path.clone()).await {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(StatusCode::NoSuchFile) => Ok(()),
            Err(e) => Err(self.sftp_error("deleting", &path, e)),
        }
    }

    fn reset(&mut self) {
        self.connection = None;
    }
}

/// Checks the server's host key against `known_hosts` during the handshake. A refusal's
/// reason is left in `refusal` because russh only reports "unknown key".
struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: Option<PathBuf>,
    trust_unknown_host: bool,
    refusal: Arc<Mutex<Option<String>>>,
}

impl HostKeyCheck {
    fn refuse(&self, reason: String) -> Result<bool, russh::Error> {
        *self.refusal.lock().expect("refusal lock") = Some(reason);
        Ok(false)
    }
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                return self.refuse(
                    "is a certificate; host certificates are not supported, list the plain key in known_hosts".into(),
                )
            }
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        let file = self
            .known_hosts
            .clone()
            .unwrap_or_else(|| PathBuf::from("~/.ssh/known_hosts"));
        let known = match &self.known_hosts {
            Some(path) => russh::keys::check_known_hosts_path(&self.host, self.port, key, path),
            None => russh::keys::check_known_hosts(&self.host, self.port, key),
        };
        match known {
            Ok(true) => Ok(true),
            Ok(false) if self.trust_unknown_host => {
                let learned = match &self.known_hosts {
                    Some(path) => russh::keys::known_hosts::learn_known_hosts_path(
                        &self.host, self.port, key, path,
                    ),
                    None => russh::keys::known_hosts::learn_known_hosts(&self.host, self.port, key),
                };
                match learned {
                    Ok(()) => {
                        tracing::warn!(host = %self.host, port = self.port, %fingerprint, file = %file.display(), "trusting a new sftp host key (trust_unknown_host)");
                        Ok(true)
                    }
                    Err(e) => self.refuse(format!("{fingerprint} could not be added to {}: {e}", file.display())),
                }
            }
            Ok(false) => self.refuse(format!(
                "{fingerprint} is not in {} (add it, e.g. with ssh-keyscan, after checking it with the server's owner)",
                file.display()
            )),
            Err(russh::keys::Error::KeyChanged { line }) => self.refuse(format!(
                "{fingerprint} differs from the one recorded at {}:{line}: refusing (possible man-in-the-middle)",
                file.display()
            )),
            Err(e) => self.refuse(format!("cannot be checked against {}: {e}", file.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelDef;

    fn store(auth: &str) -> SftpStore {
        let text = format!(
            "name = \"hie\"\n[source]\nkind = \"sftp\"\nhost = \"h\"\nuser = \"u\"\ndir = \"/out\"\n{auth}\n"
        );
        let def = ChannelDef::parse(Path::new("hie.toml"), &text).unwrap();
        SftpStore::new(&def.source).unwrap()
    }

    #[test]
    fn passwords_come_from_a_file_or_the_environment_and_never_show_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret-pw\n").unwrap();
        let from_file = store(&format!("password_file = \"{}\"", file.display()));
        assert_eq!(
            from_file.password().unwrap(),
            "s3cret-pw",
            "trailing newline dropped"
        );

        let missing = store("password_env = \"ORBITER_TEST_SURELY_UNSET_PW\"");
        let err = missing.password().unwrap_err().to_string();
        assert!(
            err.contains("ORBITER_TEST_SURELY_UNSET_PW is not set"),
            "{err}"
        );

        let auth = SourceError::Auth {
            server: from_file.server(),
            user: "u".into(),
            detail: " with the password in /run/secrets/pw".into(),
        };
        assert!(!auth.to_string().contains("s3cret"));
        assert_eq!(from_file.describe(), "sftp://u@h:22/out");
    }

    #[test]
    fn paths_resolve_against_the_watched_directory() {
        let s = store("key_file = \"/k\"");
        assert_eq!(s.path("a.hl7"), "/out/a.hl7");
        assert_eq!(s.path("processed"), "/out/processed");
        assert_eq!(s.path("/archive"), "/archive");
    }
}
