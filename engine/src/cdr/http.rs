//! The actix-web face of the CDR: every path under the scope goes to one handler that turns
//! the HTTP request into a [`FhirRequest`] and the [`FhirResponse`] back into HTTP.
//!
//! One catch-all route rather than one route per interaction, because FHIR's URL grammar is
//! already parsed once for Bundle entries ([`super::request::parse_target`]); parsing it a
//! second way for HTTP would let the two disagree. Writes, searches and history block (fsync,
//! index scans), so they run on actix's blocking pool (`web::block`), never on an arbiter
//! thread; a read by id is a few sled gets and runs inline. (A sled read can wait behind a
//! batch being applied, about a millisecond for a 10-entry transaction.)

use std::time::{Duration, SystemTime};

use actix_web::http::header::{self, HeaderMap, HeaderValue, HttpDate};
use actix_web::http::{Method as HttpMethod, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::outcome::CdrError;
use super::request::{
    parse_query, parse_target, FhirRequest, FhirResponse, Method, Return, Target,
};
use super::Cdr;

/// Largest request body accepted (a big transaction Bundle).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// The content type of every response.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// Registers the FHIR routes relative to the scope it is mounted in (`/fhir`). Needs a
/// `web::Data<Cdr>` in the app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY))
        .service(web::resource("").to(fhir))
        .service(web::resource("/{tail:.*}").to(fhir));
}

/// The one handler.
async fn fhir(req: HttpRequest, body: web::Bytes, cdr: Option<web::Data<Cdr>>) -> HttpResponse {
    let Some(cdr) = cdr else {
        return respond(
            &req,
            "",
            FhirResponse::error(&CdrError::BadRequest("CDR not configured".into())),
        );
    };
    let base = base_url(&req);
    let parsed = match to_fhir_request(&req, &body) {
        Ok(r) => r,
        Err(e) => return respond(&req, &base, FhirResponse::error(&e)),
    };
    let response = if is_point_read(&parsed) {
        // A read by id is a couple of sled gets (microseconds): a hop to the blocking pool and
        // back would cost more than it saves.
        cdr.handle(&parsed, &base)
    } else {
        let cdr = cdr.get_ref().clone();
        let b = base.clone();
        match web::block(move || cdr.handle(&parsed, &b)).await {
            Ok(r) => r,
            Err(e) => {
                FhirResponse::error(&CdrError::Corrupt(format!("request handler failed: {e}")))
            }
        }
    };
    respond(&req, &base, response)
}

/// GET of one resource or version: answered on the worker thread.
fn is_point_read(r: &FhirRequest) -> bool {
    matches!(r.method, Some(Method::Get | Method::Head))
        && matches!(
            parse_target(&r.path),
            Ok(Target::Instance(..) | Target::Version(..))
        )
}

/// `scheme://host/prefix`: the scope's path is the matched pattern without `/{tail:.*}`.
fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    let prefix = req
        .match_pattern()
        .map(|p| p.trim_end_matches("/{tail:.*}").to_string())
        .unwrap_or_else(|| "/fhir".to_string());
    format!(
        "{}://{}{}",
        info.scheme(),
        info.host(),
        prefix.trim_end_matches('/')
    )
}

fn to_fhir_request(req: &HttpRequest, body: &[u8]) -> Result<FhirRequest, CdrError> {
    let method = match *req.method() {
        HttpMethod::GET => Method::Get,
        HttpMethod::HEAD => Method::Head,
        HttpMethod::POST => Method::Post,
        HttpMethod::PUT => Method::Put,
        HttpMethod::DELETE => Method::Delete,
        HttpMethod::PATCH => Method::Patch,
        ref other => {
            return Err(CdrError::MethodNotAllowed(format!(
                "{other} is not a FHIR interaction"
            )));
        }
    };
    let mut query = parse_query(req.query_string());
    if let Some((_, f)) = query.iter().find(|(k, _)| k == "_format") {
        let f = f.to_ascii_lowercase();
        if !(f == "json" || f.contains("json")) {
            return Err(CdrError::NotAcceptable(format!(
                "_format={f}: this server speaks JSON only"
            )));
        }
    }
    let headers = req.headers();
    let path = req.match_info().get("tail").unwrap_or("").to_string();
    let search_post = method == Method::Post && path.trim_end_matches('/').ends_with("/_search");
    let mut parsed_body = None;
    if search_post {
        // POST Type/_search: the form body carries parameters, as the query string would.
        query.extend(parse_query(std::str::from_utf8(body).unwrap_or("")));
    } else if matches!(method, Method::Post | Method::Put) && !body.is_empty() {
        check_content_type(headers)?;
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| CdrError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        parsed_body = Some(v);
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let prefer = header("prefer").unwrap_or_default();
    let mut ret = None;
    let mut strict = false;
    for part in prefer.split([',', ';']).map(str::trim) {
        match part {
            "return=minimal" => ret = Some(Return::Minimal),
            "return=representation" => ret = Some(Return::Representation),
            "return=OperationOutcome" => ret = Some(Return::OperationOutcome),
            "handling=strict" => strict = true,
            _ => {}
        }
    }
    // Bundles answer without resources unless asked (as HAPI); single writes with them.
    let default = if path.trim_matches('/').is_empty() {
        Return::Minimal
    } else {
        Return::Representation
    };
    Ok(FhirRequest {
        method: Some(method),
        path,
        query,
        body: parsed_body,
        if_match: header("if-match"),
        // `identifier=x`, `?identifier=x` and `Patient?identifier=x` are all seen in the wild.
        if_none_exist: header("if-none-exist")
            .map(|s| s.split_once('?').map_or(s.as_str(), |(_, q)| q).to_string()),
        prefer: ret.unwrap_or(default),
        strict,
    })
}

/// JSON only: `application/fhir+json`, `application/json` (and the DSTU2 `json+fhir`), or no
/// content type at all.
fn check_content_type(headers: &HeaderMap) -> Result<(), CdrError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let mime = ct.split(';').next().unwrap_or("").trim();
    match mime {
        "application/fhir+json"
        | "application/json"
        | "application/json+fhir"
        | "text/json"
        | "" => Ok(()),
        other => Err(CdrError::UnsupportedMediaType(format!(
            "Content-Type '{other}' is not supported: send application/fhir+json"
        ))),
    }
}

fn respond(req: &HttpRequest, base: &str, r: FhirResponse) -> HttpResponse {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = HttpResponse::build(status);
    if let Some(etag) = r.etag() {
        if let Ok(v) = HeaderValue::from_str(&etag) {
            out.insert_header((header::ETAG, v));
        }
    }
    if let Some(ms) = r.last_modified {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        out.insert_header((header::LAST_MODIFIED, HttpDate::from(t)));
    }
    if let Some(loc) = &r.location {
        let absolute = format!("{base}/{loc}");
        if let Ok(v) = HeaderValue::from_str(&absolute) {
            let name = if r.status == 201
                || *req.method() != HttpMethod::GET && *req.method() != HttpMethod::HEAD
            {
                header::LOCATION
            } else {
                header::CONTENT_LOCATION
            };
            out.insert_header((name, v));
        }
    }
    match r.body {
        Some(body) => {
            let pretty = req.query_string().split('&').any(|p| p == "_pretty=true");
            let bytes = if pretty {
                serde_json::to_vec_pretty(&body)
            } else {
                serde_json::to_vec(&body)
            };
            out.insert_header((header::CONTENT_TYPE, FHIR_JSON));
            out.body(bytes.unwrap_or_default())
        }
        None => out.finish(),
    }
}
