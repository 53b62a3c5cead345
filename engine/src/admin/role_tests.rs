//! Every route of the channels and transactions API against every role: a role below the
//! route's gets 403 before anything happens; the route's own role gets past the check. Also
//! what the API answers to requests it cannot take (a body of the wrong type, a wrong method).

use std::sync::Arc;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::test::{self, TestRequest};
use actix_web::{web, App, HttpMessage};

use super::{AdminState, Caller, Role};
use crate::channel::{ChannelPaths, Channels};
use crate::config::JournalConfig;
use crate::deliver::{CdrTarget, Deliverer};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::route::Pipeline;

/// (method, path, the least role that may call it)
const ROUTES: &[(&str, &str, Role)] = &[
    ("GET", "/api/channels", Role::Viewer),
    ("GET", "/api/channels/none", Role::Viewer),
    ("PUT", "/api/channels/none", Role::Admin),
    ("DELETE", "/api/channels/none", Role::Admin),
    ("POST", "/api/channels/none/enable", Role::Operator),
    ("POST", "/api/channels/none/disable", Role::Operator),
    ("POST", "/api/channels/reload", Role::Operator),
    ("GET", "/api/transactions", Role::Viewer),
    ("GET", "/api/transactions/1", Role::Viewer),
    ("POST", "/api/transactions/1/rerun", Role::Operator),
    ("POST", "/api/transactions/rerun", Role::Operator),
    ("GET", "/api/stats", Role::Viewer),
];

/// An admin state over a fresh journal in `dir`, with no channels.
fn state(dir: &std::path::Path) -> web::Data<AdminState> {
    let metrics = Arc::new(Metrics::new());
    let journal = Journal::open(dir, &JournalConfig::default(), metrics.clone()).unwrap();
    let (channels, _) = Channels::load(ChannelPaths {
        channels_dir: dir.join("channels"),
        scripts_dir: dir.join("scripts"),
        limits: Default::default(),
    });
    let cdr = crate::cdr::Cdr::open(&dir.join("cdr"), 1 << 20).unwrap();
    let transforms = crate::transform::Transforms::start(Default::default(), 1, metrics.clone());
    let deliverer = Deliverer::new(CdrTarget::Embedded(cdr), dir, metrics.clone());
    let pipeline = Pipeline::new(
        channels.clone(),
        transforms,
        journal.clone(),
        deliverer,
        metrics.clone(),
    );
    web::Data::new(AdminState {
        journal,
        metrics,
        channels,
        pipeline,
        cdr: None,
        cdr_reachable: Arc::new(true.into()),
        mediators: crate::mediator::Mediators::open(dir, std::time::Duration::from_secs(60))
            .unwrap(),
    })
}

#[actix_web::test]
async fn each_route_needs_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    for role in [Role::Viewer, Role::Operator, Role::Admin] {
        let as_role = move |req: actix_web::dev::ServiceRequest,
                            next: Next<actix_web::body::BoxBody>| async move {
            req.extensions_mut().insert(Caller {
                name: "t".into(),
                roles: vec![role],
                read_bodies: false,
                peer: None,
            });
            next.call(req).await
        };
        let app = test::init_service(
            App::new().app_data(state.clone()).service(
                web::scope("/api")
                    .wrap(from_fn(as_role))
                    .configure(super::transactions::routes)
                    .configure(super::channels::routes),
            ),
        )
        .await;
        for (method, path, needed) in ROUTES {
            let req = TestRequest::default()
                .method(method.parse().unwrap())
                .uri(path)
                .insert_header(("Content-Type", "application/json"))
                .set_payload("{}")
                .to_request();
            let response: ServiceResponse = app.call(req).await.unwrap();
            let status = response.status().as_u16();
            if role < *needed {
                assert_eq!(status, 403, "{role:?} {method} {path}");
            } else {
                assert_ne!(status, 403, "{role:?} {method} {path}");
                assert_ne!(status, 405, "{method} {path} is routed");
            }
        }
    }
}

/// One request to the transactions and channels routes as `caller`: status and JSON body.
async fn call_as(
    state: &web::Data<AdminState>,
    caller: Caller,
    req: TestRequest,
) -> (u16, serde_json::Value) {
    let as_caller = move |req: actix_web::dev::ServiceRequest,
                          next: Next<actix_web::body::BoxBody>| {
        req.extensions_mut().insert(caller.clone());
        next.call(req)
    };
    let app = test::init_service(
        App::new().app_data(state.clone()).service(
            web::scope("/api")
                .wrap(from_fn(as_caller))
                .configure(super::transactions::routes)
                .configure(super::channels::routes),
        ),
    )
    .await;
    let response: ServiceResponse = app.call(req.to_request()).await.unwrap();
    let status = response.status().as_u16();
    let body = test::read_body(response).await;
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

fn caller(role: Role, read_bodies: bool) -> Caller {
    Caller {
        name: "t".into(),
        roles: vec![role],
        read_bodies,
        peer: None,
    }
}

/// Which messages a text matches tells what they hold: `q` needs the right to read bodies.
#[actix_web::test]
async fn text_search_needs_body_access() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let search = || TestRequest::get().uri("/api/transactions?q=999887777");
    let (status, body) = call_as(&state, caller(Role::Viewer, false), search()).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("read_bodies"),
        "says why: {body}"
    );
    // Other filters stay open to a masked viewer, and an empty `q` is no search.
    for uri in ["/api/transactions?status=failed", "/api/transactions?q="] {
        let req = TestRequest::get().uri(uri);
        let (status, body) = call_as(&state, caller(Role::Viewer, false), req).await;
        assert_eq!(status, 200, "{uri}: {body}");
    }
    for who in [caller(Role::Viewer, true), caller(Role::Operator, false)] {
        let (status, body) = call_as(&state, who, search()).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// One request to the whole `/api` scope (auth middleware included) with the bootstrap token.
async fn call_api(state: &web::Data<AdminState>, req: TestRequest) -> ServiceResponse {
    let token = super::AdminToken::new("t0k3n".into());
    let clients = super::clients::ApiClients::open(&state.journal).unwrap();
    let app = test::init_service(
        App::new()
            .app_data(state.clone())
            .app_data(web::Data::new(token))
            .app_data(web::Data::new(clients))
            .wrap(actix_web::middleware::from_fn(super::head_as_get))
            .configure(super::api),
    )
    .await;
    let req = req.insert_header(("Authorization", "Bearer t0k3n"));
    app.call(req.to_request())
        .await
        .unwrap()
        .map_into_boxed_body()
}

/// A JSON body sent as something else is a 415 that names the type to send.
#[actix_web::test]
async fn json_bodies_of_another_type_are_415() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    for (path, body) in [
        (
            "/api/clients",
            r#"{"name": "dash", "roles": ["viewer"], "read_bodies": false}"#,
        ),
        ("/api/transactions/rerun", r#"{"channel": "x"}"#),
    ] {
        let req = TestRequest::post()
            .uri(path)
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .set_payload(body);
        let response = call_api(&state, req).await;
        assert_eq!(response.status().as_u16(), 415, "{path}");
        let body: serde_json::Value = test::read_body_json(response).await;
        assert!(
            body["error"].as_str().unwrap().contains("application/json"),
            "{path}: {body}"
        );
    }
    // Still a 400 for JSON that does not parse.
    let req = TestRequest::post()
        .uri("/api/clients")
        .insert_header(("Content-Type", "application/json"))
        .set_payload("{");
    assert_eq!(call_api(&state, req).await.status().as_u16(), 400);
}

/// A known path with a method it does not take: 405 with `Allow`; an unknown path: 404.
#[actix_web::test]
async fn wrong_methods_are_405_with_allow() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let req = TestRequest::default()
        .method(actix_web::http::Method::PATCH)
        .uri("/api/channels/x");
    let response = call_api(&state, req).await;
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(
        response.headers().get("allow").unwrap().to_str().unwrap(),
        "GET, HEAD, PUT, DELETE"
    );
    let req = TestRequest::delete().uri("/api/transactions");
    let response = call_api(&state, req).await;
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(
        response.headers().get("allow").unwrap().to_str().unwrap(),
        "GET, HEAD"
    );
    // HEAD is GET without the body (the HTTP layer drops it): a GET route answers it.
    let req = TestRequest::default()
        .method(actix_web::http::Method::HEAD)
        .uri("/api/transactions");
    assert_eq!(call_api(&state, req).await.status().as_u16(), 200);
    let req = TestRequest::default()
        .method(actix_web::http::Method::HEAD)
        .uri("/api/transactions/1/rerun");
    let response = call_api(&state, req).await;
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(
        response.headers().get("allow").unwrap().to_str().unwrap(),
        "POST"
    );
    let req = TestRequest::get().uri("/api/nothing-here");
    assert_eq!(call_api(&state, req).await.status().as_u16(), 404);
}
