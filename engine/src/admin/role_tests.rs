//! Every route of the channels and transactions API against every role: a role below the
//! route's gets 403 before anything happens; the route's own role gets past the check.

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

#[actix_web::test]
async fn each_route_needs_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let journal = Journal::open(dir.path(), &JournalConfig::default(), metrics.clone()).unwrap();
    let (channels, _) = Channels::load(ChannelPaths {
        channels_dir: dir.path().join("channels"),
        scripts_dir: dir.path().join("scripts"),
        limits: Default::default(),
    });
    let cdr = crate::cdr::Cdr::open(&dir.path().join("cdr"), 1 << 20).unwrap();
    let transforms = crate::transform::Transforms::start(Default::default(), 1, metrics.clone());
    let deliverer = Deliverer::new(CdrTarget::Embedded(cdr), dir.path(), metrics.clone());
    let pipeline = Pipeline::new(
        channels.clone(),
        transforms,
        journal.clone(),
        deliverer,
        metrics.clone(),
    );
    let state = web::Data::new(AdminState {
        journal,
        metrics,
        channels,
        pipeline,
        cdr: None,
        cdr_reachable: Arc::new(true.into()),
        mediators: crate::mediator::Mediators::open(dir.path(), std::time::Duration::from_secs(60))
            .unwrap(),
    });
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
