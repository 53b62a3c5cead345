//! `orbiter-fhir-validator`: a mediator in OpenHIM's model. It serves `POST /validate` (a FHIR
//! resource or Bundle in, an `application/json+openhim` answer out), registers itself with
//! Orbiter at start and sends a heartbeat every few seconds, applying the config that comes
//! back.
//!
//! Environment:
//! - `ORBITER_API_URL` (required): Orbiter's admin port, e.g. `http://orbiter:8080`;
//! - `ORBITER_MEDIATOR_TOKEN` (required): an API client token with the `mediator` role (never
//!   logged);
//! - `MEDIATOR_ADDR`: where to listen (default `0.0.0.0:8600`; port 0 picks a free one, and the
//!   registration carries the real port);
//! - `MEDIATOR_HOST`: the host Orbiter should call (default: the listen address, or
//!   `127.0.0.1` when that is 0.0.0.0; in Kubernetes the Service name);
//! - `MEDIATOR_HEARTBEAT_SECS`: heartbeat period (default 10, as OpenHIM's mediators).

mod openhim;
mod orbiter;
mod validate;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::Value;
use tokio::sync::RwLock;

use openhim::{CONTENT_TYPE, VALIDATE_PATH};
use validate::Settings;

/// Bodies above this are refused before parsing (a Bundle of thousands of entries fits).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The settings in force, replaced when a heartbeat brings a new config.
type Shared = Arc<RwLock<Settings>>;

struct Env {
    api_url: String,
    token: String,
    addr: SocketAddr,
    host: Option<String>,
    heartbeat: Duration,
}

impl Env {
    fn read() -> Result<Env, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let api_url = var("ORBITER_API_URL").ok_or("ORBITER_API_URL is not set")?;
        let token = var("ORBITER_MEDIATOR_TOKEN").ok_or("ORBITER_MEDIATOR_TOKEN is not set")?;
        let addr = var("MEDIATOR_ADDR")
            .unwrap_or_else(|| "0.0.0.0:8600".into())
            .parse()
            .map_err(|e| format!("MEDIATOR_ADDR: {e}"))?;
        let heartbeat = match var("MEDIATOR_HEARTBEAT_SECS") {
            None => Duration::from_secs(10),
            Some(s) => s
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0 && *s <= 3600.0)
                .map(Duration::from_secs_f64)
                .ok_or("MEDIATOR_HEARTBEAT_SECS must be seconds (0-3600]")?,
        };
        Ok(Env {
            api_url,
            token,
            addr,
            host: var("MEDIATOR_HOST"),
            heartbeat,
        })
    }
}

async fn validate_body(body: web::Bytes, settings: web::Data<Shared>) -> HttpResponse {
    let received = openhim::now();
    let settings = settings.read().await.clone();
    let answer = match serde_json::from_slice::<Value>(&body) {
        Ok(value) => {
            let report = validate::validate(&value, &settings);
            openhim::answer(&report, &settings, &received)
        }
        Err(e) => openhim::unreadable(&format!("the body is not JSON: {e}")),
    };
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(answer.to_string())
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

#[actix_web::main]
async fn main() -> ExitCode {
    let env = match Env::read() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("orbiter-fhir-validator: {e}");
            return ExitCode::from(2);
        }
    };
    let settings: Shared = Arc::new(RwLock::new(Settings::default()));
    let data = web::Data::new(settings.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route(VALIDATE_PATH, web::post().to(validate_body))
            .route("/health", web::get().to(health))
    })
    .workers(2)
    .bind(env.addr);
    let server = match server {
        Ok(server) => server,
        Err(e) => {
            eprintln!("orbiter-fhir-validator: cannot listen on {}: {e}", env.addr);
            return ExitCode::from(1);
        }
    };
    let bound = server.addrs()[0];
    let host = env.host.clone().unwrap_or_else(|| {
        if bound.ip().is_unspecified() {
            "127.0.0.1".into()
        } else {
            bound.ip().to_string()
        }
    });
    eprintln!(
        "orbiter-fhir-validator listening on {bound}; Orbiter calls {host}:{}{VALIDATE_PATH}",
        bound.port()
    );

    let api = match orbiter::Api::new(&env.api_url, env.token) {
        Ok(api) => api,
        Err(e) => {
            eprintln!("orbiter-fhir-validator: HTTP client: {e}");
            return ExitCode::from(1);
        }
    };
    let registration = openhim::registration(&host, bound.port());
    actix_web::rt::spawn(async move {
        let refused = orbiter::keep_registered(api, registration, settings, env.heartbeat).await;
        // A bad token or a registration Orbiter refuses: running on would only hide it.
        eprintln!("orbiter-fhir-validator: Orbiter refused us ({refused}); stopping");
        std::process::exit(1);
    });
    match server.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orbiter-fhir-validator: {e}");
            ExitCode::from(1)
        }
    }
}
