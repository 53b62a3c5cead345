//! A FHIR REST client for one server: posts Bundles (or single resources) with rustls, a bearer
//! token if configured, and timeouts.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{classify, error_chain, Delivery};

/// One FHIR server.
#[derive(Clone)]
pub struct FhirHttp {
    client: reqwest::Client,
    /// The FHIR base URL requests go to, without a trailing slash.
    endpoint: String,
    /// The base URL as logs may show it: without credentials (`user:password@`) or a query.
    base: String,
    credentials: Option<Credentials>,
}

/// How to authenticate to the server.
#[derive(Clone)]
pub enum Credentials {
    Bearer(String),
    Basic { username: String, password: String },
}

impl std::fmt::Debug for FhirHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("FhirHttp")
            .field("base", &self.base)
            .finish()
    }
}

impl FhirHttp {
    /// `tls_ca`: a PEM file of the CA certificates an `https` server's certificate must chain
    /// to, trusted instead of the system's roots (a site's own CA in front of HAPI FHIR).
    pub fn new(
        base: &str,
        credentials: Option<Credentials>,
        timeout: Duration,
        tls_ca: Option<&Path>,
    ) -> Result<FhirHttp, String> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "FHIR base `{}` must be an http(s) URL",
                shown(base)
            ));
        }
        let client = client_builder(tls_ca)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .user_agent(concat!("orbiter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let base = base.trim_end_matches('/').to_string();
        Ok(FhirHttp {
            client,
            base: shown(&base),
            endpoint: base,
            credentials,
        })
    }

    /// The base URL, for logs: without the credentials or query it may carry.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A Bundle goes to the base URL (batch/transaction); a single resource to its type.
    /// `code`: the HTTP status, when the server answered.
    ///
    /// An error names the URL as [`FhirHttp::base`] shows it: it is kept on the transaction
    /// (read by viewers) and, in ACK mode `on-delivery`, sent to the message's sender in the
    /// ACK, so it must not carry the `user:password@` or query a configured URL may hold.
    pub async fn post(&self, value: &Value, code: &mut Option<u16>) -> Delivery {
        let (url, shown) = match value["resourceType"].as_str() {
            Some("Bundle") | None => (self.endpoint.clone(), self.base.clone()),
            Some(kind) => (
                format!("{}/{kind}", self.endpoint),
                format!("{}/{kind}", self.base),
            ),
        };
        let mut request = self
            .client
            .post(&url)
            .header("Content-Type", "application/fhir+json")
            .header("Accept", "application/fhir+json")
            .json(value);
        request = self.authenticate(request);
        match request.send().await {
            // (reqwest's own text names the URL again, its password masked: left out.)
            Err(e) => Delivery::retry(format!("{shown}: {}", error_chain(&e.without_url()))),
            Ok(response) => {
                let status = response.status().as_u16();
                *code = Some(status);
                let body = response.json::<Value>().await.unwrap_or(Value::Null);
                classify(status, body)
            }
        }
    }

    fn authenticate(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            None => request,
            Some(Credentials::Bearer(token)) => request.bearer_auth(token),
            Some(Credentials::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
        }
    }

    /// `GET metadata`: is the server there and speaking FHIR?
    pub async fn metadata(&self) -> Result<Value, String> {
        let request = self.authenticate(self.client.get(format!("{}/metadata", self.endpoint)));
        let response = request.send().await.map_err(|e| error_chain(&e))?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        response.json().await.map_err(|e| e.to_string())
    }
}

/// An HTTP client builder that trusts the CA certificates in `tls_ca` (PEM) instead of the
/// system's roots, or the system's roots when `None`. An error names the file and says why.
pub fn client_builder(tls_ca: Option<&Path>) -> Result<reqwest::ClientBuilder, String> {
    let builder = reqwest::Client::builder();
    let Some(path) = tls_ca else {
        return Ok(builder);
    };
    let pem = std::fs::read(path).map_err(|e| format!("TLS CA {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("TLS CA {}: {}", path.display(), error_chain(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS CA {}: no PEM certificate (`-----BEGIN CERTIFICATE-----`) in it",
            path.display()
        ));
    }
    Ok(builder.tls_certs_only(certs))
}

/// `url` without `user:password@` and without a query (where tokens go too).
pub fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.as_str().trim_end_matches('/').to_string()
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_base_shown_in_logs_carries_no_credentials() {
        let http = super::FhirHttp::new(
            "https://orbiter:s3cret@hapi:8443/fhir/?token=abc",
            None,
            std::time::Duration::from_secs(1),
            None,
        )
        .unwrap();
        assert_eq!(http.base(), "https://hapi:8443/fhir");
        assert!(!format!("{http:?}").contains("s3cret"));
    }

    /// A delivery that fails names the server without the credentials in its URL: the error
    /// is kept on the transaction and may reach the sender in an `on-delivery` ACK.
    #[tokio::test]
    async fn a_failed_delivery_names_the_server_without_its_credentials() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let http = super::FhirHttp::new(
            &format!("http://orbiter:s3cret@127.0.0.1:{closed}/fhir?token=abc"),
            None,
            std::time::Duration::from_secs(2),
            None,
        )
        .unwrap();
        for value in [
            serde_json::json!({"resourceType": "Bundle", "type": "transaction"}),
            serde_json::json!({"resourceType": "Patient"}),
        ] {
            let mut code = None;
            match http.post(&value, &mut code).await {
                super::Delivery::Retry { error, .. } => {
                    assert!(!error.contains("s3cret"), "{error}");
                    assert!(!error.contains("token=abc"), "{error}");
                    assert!(
                        error.starts_with(&format!("http://127.0.0.1:{closed}/fhir")),
                        "{error}"
                    );
                    assert!(error.contains("refused"), "{error}");
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(code, None);
        }
    }
}
