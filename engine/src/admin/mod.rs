//! The admin port: `/health`, `/ready`, `/metrics` open; everything under `/api` (and the
//! embedded CDR under `/fhir`) behind a bearer token or a client certificate, with roles.
//!
//! Security lives in: [`auth`] (who is calling, and may they), [`clients`] (API clients and
//! their hashed tokens), [`ratelimit`] (failed authentication per address), [`audit`] (the
//! append-only trail), [`mask`] (message bodies for viewers), [`routes`] (the one route table:
//! roles, and [`openapi`]'s document).

pub mod audit;
pub mod auth;
mod channels;
pub mod clients;
mod health;
pub mod mask;
mod mediators;
mod openapi;
mod ratelimit;
#[cfg(test)]
mod role_tests;
pub mod routes;
pub mod starting;
mod transactions;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpMessage as _, HttpServer};

pub use auth::{AdminToken, Caller, Role, TokenSource};

use crate::cdr::Cdr;
use crate::channel::Channels;
use crate::journal::Journal;
use crate::mediator::Mediators;
use crate::metrics::Metrics;
use crate::route::Pipeline;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub journal: Journal,
    pub metrics: Arc<Metrics>,
    pub channels: Channels,
    pub pipeline: Pipeline,
    /// The embedded CDR, served under `/fhir` (absent when an external CDR is configured).
    pub cdr: Option<Cdr>,
    /// Whether the CDR answered its last `metadata` probe (always true for the embedded one).
    pub cdr_reachable: Arc<std::sync::atomic::AtomicBool>,
    /// Registered mediators (`/api/mediators`), shared with the `mediator` destination.
    pub mediators: Mediators,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Binding the port or loading its TLS files: as for the ingest listeners.
    #[error(transparent)]
    Listen(#[from] crate::listen::ListenError),
    #[error("API clients: {0}")]
    Clients(#[from] clients::ClientError),
}

/// The answer to a JSON request body that could not be read: 415 naming the expected type when
/// the `Content-Type` is not JSON (actix's own message, "Content type error", says neither
/// which nor why), 400 with the parser's reason otherwise.
pub(crate) fn json_body_error(e: actix_web::Error) -> actix_web::HttpResponse {
    use actix_web::error::JsonPayloadError;
    if let Some(JsonPayloadError::ContentType) = e.as_error::<JsonPayloadError>() {
        return actix_web::HttpResponse::UnsupportedMediaType().json(serde_json::json!({
            "error": "the body must be JSON: send `Content-Type: application/json`"
        }));
    }
    actix_web::HttpResponse::BadRequest().json(serde_json::json!({"error": e.to_string()}))
}

/// Everything under `/api`, behind the auth middleware.
fn api(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api")
            .wrap(from_fn(auth::require_token))
            .configure(transactions::routes)
            .configure(channels::routes)
            .configure(clients::routes)
            .configure(audit::routes)
            .configure(openapi::routes)
            .configure(mediators::routes)
            // Only reached by callers allowed to (unknown routes need admin).
            .default_service(web::to(no_route)),
    );
}

/// A HEAD request, taken for a GET by [`head_as_get`] (for the 405's text).
#[derive(Clone, Copy)]
struct Head;

/// HEAD is GET without the body (RFC 9110): every GET route answers it. The method is changed
/// before routing; actix's HTTP/1 and HTTP/2 layers saw the HEAD when they read the request and
/// send the answer's status and headers without its body. Role checks read HEAD as GET anyway
/// ([`routes::Method::from_http`]).
async fn head_as_get(
    mut req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    if req.method() == actix_web::http::Method::HEAD {
        req.head_mut().method = actix_web::http::Method::GET;
        req.extensions_mut().insert(Head);
    }
    next.call(req).await
}

/// No route took the request: 405 with `Allow` when the path is a route of the table under
/// another method (each `.route` is its own resource guarded by its method, so actix falls
/// through to here instead of answering 405 itself), else 404. `Allow` names HEAD wherever it
/// names GET (see [`head_as_get`]).
async fn no_route(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    let allowed = routes::methods_of(req.path());
    // `/api/clients/` for `/api/clients`: the route table reads both, actix only the second.
    // A permanent redirect that keeps the method and body says so (a 405 listing the very
    // method that was used would not).
    let trimmed = req.path().trim_end_matches('/');
    if trimmed.len() < req.path().len() && !trimmed.is_empty() {
        let method = routes::Method::from_http(req.method());
        if method.is_some_and(|m| allowed.contains(&m)) {
            let location = match req.query_string() {
                "" => trimmed.to_string(),
                query => format!("{trimmed}?{query}"),
            };
            return actix_web::HttpResponse::PermanentRedirect()
                .insert_header((actix_web::http::header::LOCATION, location.clone()))
                .json(serde_json::json!({
                    "error": format!("no such route; this one is {trimmed} (no trailing slash)")
                }));
        }
    }
    if allowed.is_empty() {
        return actix_web::HttpResponse::NotFound()
            .json(serde_json::json!({"error": "no such route"}));
    }
    let allow = allow_header(&allowed);
    let method = if req.extensions().get::<Head>().is_some() {
        "HEAD".to_string()
    } else {
        req.method().to_string()
    };
    actix_web::HttpResponse::MethodNotAllowed()
        .insert_header((actix_web::http::header::ALLOW, allow.clone()))
        .json(serde_json::json!({
            "error": format!("{method} is not allowed here; allowed: {allow}")
        }))
}

/// `GET, HEAD, POST`: the methods of the table, HEAD after GET.
fn allow_header(methods: &[routes::Method]) -> String {
    let mut names = Vec::new();
    for method in methods {
        names.push(method.as_str());
        if *method == routes::Method::Get {
            names.push("HEAD");
        }
    }
    names.join(", ")
}

/// Binds the admin port and returns the server (run it by awaiting or spawning it).
pub fn server(
    addr: SocketAddr,
    workers: usize,
    tls: &crate::config::TlsConfig,
    state: AdminState,
    token: AdminToken,
) -> Result<(actix_web::dev::Server, Vec<SocketAddr>), AdminError> {
    let tls = crate::tls::server_config(tls).map_err(crate::listen::ListenError::from)?;
    let clients = Arc::new(clients::ApiClients::open(&state.journal)?);
    let authenticator = web::Data::new(auth::Authenticator::new(
        &token,
        clients.clone(),
        state.journal.clone(),
    ));
    let clients = web::Data::from(clients);
    let cdr = state.cdr.clone().map(web::Data::new);
    let state = web::Data::new(state);
    let token = web::Data::new(token);
    let factory = move || {
        let mut app = App::new()
            .app_data(state.clone())
            .app_data(token.clone())
            .app_data(authenticator.clone())
            .app_data(clients.clone())
            .app_data(web::JsonConfig::default().limit(16 * 1024 * 1024))
            .wrap(from_fn(head_as_get))
            .configure(health::routes)
            .configure(api)
            // `/health`, `/ready`, `/metrics` under another method: 405, as under `/api`.
            .default_service(web::to(no_route));
        // The embedded CDR holds patient data: behind the same token as the API.
        if let Some(cdr) = &cdr {
            app = app.service(
                web::scope("/fhir")
                    .app_data(cdr.clone())
                    // Inside the auth middleware (the last `wrap` runs first): the caller is known.
                    .wrap(from_fn(audit::fhir_writes))
                    .wrap(from_fn(auth::require_token))
                    .configure(crate::cdr::routes),
            );
        }
        app
    };
    let bind_err = |source| crate::listen::ListenError::Bind { addr, source };
    let server = HttpServer::new(factory)
        .on_connect(auth::on_connect)
        .workers(workers.max(1))
        .disable_signals()
        .shutdown_timeout(5);
    let server = match tls {
        None => server.bind(addr).map_err(bind_err)?,
        Some(config) => server
            .bind_rustls_0_23(addr, Arc::unwrap_or_clone(config))
            .map_err(bind_err)?,
    };
    let addrs = server.addrs();
    Ok((server.run(), addrs))
}

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::test::{self, TestRequest};
    use actix_web::{web, App};

    #[actix_web::test]
    async fn probes_answer_head_and_name_their_methods_to_others() {
        let app = test::init_service(
            App::new()
                .wrap(from_fn(super::head_as_get))
                .configure(super::health::routes)
                .default_service(web::to(super::no_route)),
        )
        .await;
        let head = TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/health")
            .to_request();
        assert_eq!(test::call_service(&app, head).await.status(), 200);
        for (method, path) in [
            ("POST", "/health"),
            ("PUT", "/ready"),
            ("DELETE", "/metrics"),
        ] {
            let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
            let req = TestRequest::default()
                .method(method.clone())
                .uri(path)
                .to_request();
            let res = test::call_service(&app, req).await;
            assert_eq!(res.status(), 405, "{method} {path}");
            assert_eq!(res.headers().get("allow").unwrap(), "GET, HEAD");
            let body: serde_json::Value = test::read_body_json(res).await;
            assert!(
                body["error"].as_str().unwrap().starts_with(method.as_str()),
                "{body}"
            );
        }
        let req = TestRequest::get().uri("/nothing").to_request();
        assert_eq!(test::call_service(&app, req).await.status(), 404);
    }

    #[test]
    fn allow_names_head_with_get() {
        use super::routes::Method;
        assert_eq!(
            super::allow_header(&[Method::Get, Method::Put, Method::Delete]),
            "GET, HEAD, PUT, DELETE"
        );
        assert_eq!(super::allow_header(&[Method::Post]), "POST");
    }
}
