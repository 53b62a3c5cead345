//! Channels through the API:
//!
//! - `GET /api/channels`, `GET /api/channels/{name}` (viewer);
//! - `PUT /api/channels/{name}` (admin): the channel's TOML (`text/plain`, `application/toml`)
//!   or its JSON form; checked as `orbiter check` does (scripts compiled), then written
//!   atomically into the channels dir and activated;
//! - `DELETE /api/channels/{name}` (admin);
//! - `POST /api/channels/{name}/enable|disable` (operator): rewrites `enabled` in the file;
//! - `POST /api/channels/reload` (operator).
//!
//! The file on disk stays the source of truth (a restart, `orbiter check`, and GitOps see the
//! same thing the API did); the API only writes files and triggers the reload the file watcher
//! would do a moment later.

use std::io::Write;
use std::path::{Path, PathBuf};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::audit::{self, AuditAction};
use super::{AdminState, Caller, Role};
use crate::channel::{Channel, ChannelDef, ChannelError, Channels, ReloadReport};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/channels", web::get().to(list))
        .route("/channels/reload", web::post().to(reload))
        .route("/channels/{name}", web::get().to(one))
        .route("/channels/{name}", web::put().to(put))
        .route("/channels/{name}", web::delete().to(delete))
        .route("/channels/{name}/enable", web::post().to(enable))
        .route("/channels/{name}/disable", web::post().to(disable));
}

/// One change to the channel files at a time (check, write, reload is not atomic as a whole).
static WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn describe(channel: &Channel) -> Value {
    json!({
        "name": channel.name(),
        "description": channel.def.description,
        "enabled": channel.def.enabled,
        "priority": channel.def.priority,
        "revision": channel.revision,
        "file": channel.file,
        "source": channel.def.source,
        "match": channel.def.match_rules,
        "filter": channel.filter.as_ref().map(|s| &s.path),
        "transform": channel.transform.as_ref().map(|s| &s.path),
        "destinations": channel.def.destinations,
        "ack": channel.def.ack,
        "retry": channel.def.retry,
        "retention": channel.def.retention,
    })
}

fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": message.into()}))
}

/// A definition that does not check: 422 with where (`file:line:col` in `error`, and apart).
fn invalid(e: &ChannelError) -> HttpResponse {
    let mut body = json!({"error": e.to_string()});
    match e {
        ChannelError::Definition {
            file, line, column, ..
        } => {
            body["file"] = json!(file);
            body["line"] = json!(line);
            body["column"] = json!(column);
        }
        // A script that does not compile: where in the script, alike.
        ChannelError::Script(e) => {
            body["file"] = json!(e.file);
            body["line"] = json!(e.line);
            body["column"] = json!(e.column);
        }
        _ => {}
    }
    HttpResponse::UnprocessableEntity().json(body)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

async fn list(
    caller: Caller,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, actix_web::Error> {
    caller.require(Role::Viewer)?;
    let set = state.channels.current();
    Ok(HttpResponse::Ok().json(json!({
        "channels": set.channels.iter().map(|c| describe(c)).collect::<Vec<_>>(),
        "last_reload": state.channels.last_report(),
    })))
}

async fn one(
    caller: Caller,
    state: web::Data<AdminState>,
    name: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    caller.require(Role::Viewer)?;
    Ok(match state.channels.current().get(&name) {
        Some(channel) => HttpResponse::Ok().json(describe(&channel)),
        None => error(StatusCode::NOT_FOUND, "no such channel"),
    })
}

/// Recompiles everything; channels that fail keep their running revision.
async fn reload(
    caller: Caller,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, actix_web::Error> {
    caller.require(Role::Operator)?;
    let _writing = WRITES.lock().await;
    let report = reload_now(&state.channels).await;
    audit::record(
        &state.journal,
        &caller,
        AuditAction {
            action: "reload",
            target: "channels",
            detail: json!({"updated": report.updated, "removed": report.removed, "errors": report.errors.len()}),
        },
    );
    let status = if report.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(HttpResponse::build(status).json(report))
}

async fn reload_now(channels: &Channels) -> ReloadReport {
    let channels = channels.clone();
    web::block(move || channels.reload())
        .await
        .unwrap_or_else(|e| ReloadReport {
            errors: vec![e.to_string()],
            ..ReloadReport::default()
        })
}

/// The file that holds channel `name`: the running channel's, else `<channels_dir>/<name>.toml`.
fn file_for(channels: &Channels, name: &str) -> (PathBuf, bool) {
    match channels.current().get(name) {
        Some(channel) => (channel.file.clone(), true),
        None => {
            let file = channels.paths().channels_dir.join(format!("{name}.toml"));
            let exists = file.exists();
            (file, exists)
        }
    }
}

/// The channel's TOML from the request body: TOML as is, JSON converted.
fn body_as_toml(req: &HttpRequest, body: &[u8]) -> Result<String, String> {
    let json = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if json {
        let def: ChannelDef =
            serde_json::from_slice(body).map_err(|e| format!("channel JSON: {e}"))?;
        toml::to_string(&def).map_err(|e| format!("channel JSON: {e}"))
    } else {
        String::from_utf8(body.to_vec()).map_err(|_| "the channel TOML must be UTF-8".to_string())
    }
}

/// Writes `text` to `file` so that readers see the old or the new file, never half of one:
/// a temp file beside it (ignored by the loader: not `.toml`), fsync, rename, fsync the dir.
fn write_atomically(file: &Path, text: &str) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&temp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&temp, file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    sync_dir(dir);
    Ok(())
}

/// Makes a rename or removal durable (best effort: not every filesystem allows it).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The answer when a channel file cannot be written or removed. A read-only channels directory
/// (a ConfigMap, a read-only root filesystem, a GitOps checkout) is how deployments are meant
/// to run, not a server fault: 409, saying where channels are changed instead.
fn not_written(verb: &str, file: &Path, e: &std::io::Error) -> HttpResponse {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => error(
            StatusCode::CONFLICT,
            format!(
                "cannot {verb} {}: {e}. The channels directory is read-only here: change the channel file where it comes from (in a GitOps deployment, in Git) and the engine reloads it",
                file.display()
            ),
        ),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot {verb} {}: {e}", file.display()),
        ),
    }
}

/// Checks, writes and activates `text` as channel `name`; the answer says what happened.
async fn install(
    state: &AdminState,
    name: &str,
    file: &Path,
    text: String,
) -> Result<(Channel, ReloadReport), HttpResponse> {
    let channels = state.channels.clone();
    let (check_file, check_text) = (file.to_path_buf(), text.clone());
    let compiled = web::block(move || channels.compile(&check_file, &check_text))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let channel = compiled.map_err(|e| invalid(&e))?;
    if channel.name() != name {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "the definition names channel `{}`, the URL `{name}`",
                channel.name()
            ),
        ));
    }
    let (target, body) = (file.to_path_buf(), text);
    web::block(move || write_atomically(&target, &body))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| not_written("write", file, &e))?;
    let report = reload_now(&state.channels).await;
    // Another file could have changed meanwhile; what counts is that this one is running.
    let running = state.channels.current().get(name);
    match running {
        Some(running) if running.revision == channel.revision => Ok((channel, report)),
        _ => Err(HttpResponse::UnprocessableEntity().json(json!({
            "error": format!("channel `{name}` was written but is not running"),
            "reload": report,
        }))),
    }
}

async fn put(
    caller: Caller,
    state: web::Data<AdminState>,
    name: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, actix_web::Error> {
    caller.require(Role::Admin)?;
    let name = name.into_inner();
    if !valid_name(&name) {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "channel names are 1-64 letters, digits, `-` or `_`",
        ));
    }
    let text = match body_as_toml(&req, &body) {
        Ok(text) => text,
        Err(e) => return Ok(error(StatusCode::BAD_REQUEST, e)),
    };
    let _writing = WRITES.lock().await;
    let (file, existed) = file_for(&state.channels, &name);
    let (channel, report) = match install(&state, &name, &file, text).await {
        Ok(done) => done,
        Err(response) => return Ok(response),
    };
    audit::record(
        &state.journal,
        &caller,
        AuditAction {
            action: if existed { "update" } else { "create" },
            target: &format!("channel/{name}"),
            detail: json!({"revision": channel.revision}),
        },
    );
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut body = describe(&channel);
    body["reload"] = json!(report);
    Ok(HttpResponse::build(status).json(body))
}

async fn delete(
    caller: Caller,
    state: web::Data<AdminState>,
    name: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    caller.require(Role::Admin)?;
    let name = name.into_inner();
    if !valid_name(&name) {
        return Ok(error(StatusCode::NOT_FOUND, "no such channel"));
    }
    let _writing = WRITES.lock().await;
    let (file, exists) = file_for(&state.channels, &name);
    if !exists {
        return Ok(error(StatusCode::NOT_FOUND, "no such channel"));
    }
    if let Err(e) = std::fs::remove_file(&file) {
        return Ok(not_written("remove", &file, &e));
    }
    if let Some(dir) = file.parent() {
        sync_dir(dir);
    }
    let report = reload_now(&state.channels).await;
    audit::record(
        &state.journal,
        &caller,
        AuditAction {
            action: "delete",
            target: &format!("channel/{name}"),
            detail: json!({"file": file}),
        },
    );
    Ok(HttpResponse::Ok().json(json!({"deleted": name, "reload": report})))
}

async fn enable(
    caller: Caller,
    state: web::Data<AdminState>,
    name: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    set_enabled(caller, state, name.into_inner(), true).await
}

async fn disable(
    caller: Caller,
    state: web::Data<AdminState>,
    name: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    set_enabled(caller, state, name.into_inner(), false).await
}

async fn set_enabled(
    caller: Caller,
    state: web::Data<AdminState>,
    name: String,
    enabled: bool,
) -> Result<HttpResponse, actix_web::Error> {
    caller.require(Role::Operator)?;
    let _writing = WRITES.lock().await;
    let Some(running) = state.channels.current().get(&name) else {
        return Ok(error(StatusCode::NOT_FOUND, "no such channel"));
    };
    let text = match std::fs::read_to_string(&running.file) {
        Ok(text) => text,
        Err(e) => {
            return Ok(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {}: {e}", running.file.display()),
            ))
        }
    };
    let edited = with_enabled(&text, enabled);
    // The edit is textual; make sure it said what we meant before anything is written.
    let took = ChannelDef::parse(&running.file, &edited).is_ok_and(|def| def.enabled == enabled);
    if !took {
        return Ok(error(
            StatusCode::CONFLICT,
            format!(
                "cannot set `enabled` in {}: edit the file, or PUT the whole channel",
                running.file.display()
            ),
        ));
    }
    let (channel, _) = match install(&state, &name, &running.file, edited).await {
        Ok(done) => done,
        Err(response) => return Ok(response),
    };
    audit::record(
        &state.journal,
        &caller,
        AuditAction {
            action: if enabled { "enable" } else { "disable" },
            target: &format!("channel/{name}"),
            detail: json!({"revision": channel.revision}),
        },
    );
    Ok(HttpResponse::Ok().json(describe(&channel)))
}

/// The channel file's text with its top-level `enabled` set, comments and layout kept: the
/// existing `enabled = …` line (before the first table) is replaced, or one is added before the
/// first table.
fn with_enabled(text: &str, enabled: bool) -> String {
    let setting = format!("enabled = {enabled}");
    let mut out = Vec::new();
    let mut done = false;
    let mut in_tables = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if !in_tables && trimmed.starts_with('[') {
            in_tables = true;
            if !done {
                out.push(setting.clone());
                done = true;
            }
        }
        let is_enabled_key = trimmed
            .strip_prefix("enabled")
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if !in_tables && is_enabled_key {
            if !done {
                out.push(setting.clone());
                done = true;
            }
            continue;
        }
        out.push(line.to_string());
    }
    if !done {
        out.push(setting);
    }
    let mut joined = out.join("\n");
    joined.push('\n');
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_channels_dir_is_a_conflict_not_a_server_error() {
        use std::io::{Error, ErrorKind};
        let file = Path::new("/channels/adt.toml");
        for kind in [ErrorKind::PermissionDenied, ErrorKind::ReadOnlyFilesystem] {
            let r = not_written("write", file, &Error::from(kind));
            assert_eq!(r.status(), StatusCode::CONFLICT, "{kind:?}");
        }
        let r = not_written("remove", file, &Error::from(ErrorKind::Other));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn enabled_is_replaced_or_added_before_the_first_table() {
        let text = "# c\nname = \"a\"\nenabled = true # on\n[source]\nkind = \"mllp\"\n";
        assert_eq!(
            with_enabled(text, false),
            "# c\nname = \"a\"\nenabled = false\n[source]\nkind = \"mllp\"\n"
        );
        let text = "name = \"a\"\n\n[source]\nkind = \"mllp\"\nenabled_x = 1\n";
        let edited = with_enabled(text, false);
        assert_eq!(
            edited,
            "name = \"a\"\n\nenabled = false\n[source]\nkind = \"mllp\"\nenabled_x = 1\n"
        );
        assert_eq!(
            with_enabled("name = \"a\"", true),
            "name = \"a\"\nenabled = true\n"
        );
    }
}
