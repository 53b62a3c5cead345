//! Talking to Orbiter's admin API: register once at start, then a heartbeat every few seconds
//! whose answer may carry a new config.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::sync::RwLock;

use crate::openhim::URN;
use crate::validate::Settings;

/// Orbiter's API and the credentials to use it.
pub struct Api {
    client: reqwest::Client,
    /// e.g. `http://orbiter:8080`, without a trailing slash.
    base: String,
    /// Bearer token of an API client with the `mediator` role. Never logged.
    token: String,
}

/// Why a call to Orbiter failed.
#[derive(Debug)]
pub enum ApiError {
    /// Try again later (not reachable, 5xx).
    Transient(String),
    /// Retrying will not help (a 4xx: a bad token, a registration Orbiter refuses).
    Refused(u16, String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Transient(m) => write!(f, "{m}"),
            ApiError::Refused(status, m) => {
                write!(f, "HTTP {status}: {m}")?;
                // Orbiter's 401/403 say nothing about why: say what to check.
                match status {
                    401 => write!(
                        f,
                        " (ORBITER_MEDIATOR_TOKEN is not a valid API client token)"
                    ),
                    403 if m.contains("\"forbidden\"") => write!(
                        f,
                        " (the API client of ORBITER_MEDIATOR_TOKEN needs the `mediator` role)"
                    ),
                    _ => Ok(()),
                }
            }
        }
    }
}

impl Api {
    pub fn new(base: &str, token: String) -> Result<Api, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Api {
            client,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn post(&self, path: &str, body: &Value) -> Result<(u16, String), ApiError> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| ApiError::Transient(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        match status {
            200..=299 => Ok((status, text)),
            500..=599 | 408 | 429 => Err(ApiError::Transient(format!("HTTP {status}"))),
            _ => Err(ApiError::Refused(status, text.chars().take(300).collect())),
        }
    }

    /// `POST /api/mediators`.
    pub async fn register(&self, registration: &Value) -> Result<(), ApiError> {
        self.post("/api/mediators", registration).await.map(|_| ())
    }

    /// `POST /api/mediators/{urn}/heartbeat`; the config when Orbiter sends one back.
    pub async fn heartbeat(
        &self,
        uptime: Duration,
        want_config: bool,
    ) -> Result<Option<Map<String, Value>>, ApiError> {
        let mut body = json!({"uptime": uptime.as_secs_f64()});
        if want_config {
            body["config"] = json!(true);
        }
        let (_, text) = self
            .post(&format!("/api/mediators/{URN}/heartbeat"), &body)
            .await?;
        // An empty body: the config has not changed.
        Ok(serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.as_object().cloned()))
    }
}

/// Registers (retrying while Orbiter is unreachable), then beats every `every` and applies any
/// config that comes back. A 404 on a heartbeat (an admin removed the registration, or the
/// engine lost it) registers again. Returns only on a refusal retrying cannot fix.
pub async fn keep_registered(
    api: Api,
    registration: Value,
    settings: Arc<RwLock<Settings>>,
    every: Duration,
) -> ApiError {
    let started = Instant::now();
    'register: loop {
        match api.register(&registration).await {
            Ok(()) => eprintln!("registered {URN} with {}", api.base),
            Err(ApiError::Transient(why)) => {
                eprintln!("cannot reach Orbiter to register ({why}); retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(refused) => return refused,
        }
        // The first heartbeat asks for the config: it may have been set before we started.
        let mut want_config = true;
        loop {
            match api.heartbeat(started.elapsed(), want_config).await {
                Ok(Some(config)) => {
                    let mut current = settings.write().await;
                    current.apply(&config);
                    eprintln!("config applied: {current:?}");
                    want_config = false;
                }
                Ok(None) => want_config = false,
                Err(ApiError::Refused(404, _)) => continue 'register,
                Err(ApiError::Transient(why)) => eprintln!("heartbeat failed: {why}"),
                Err(refused) => return refused,
            }
            tokio::time::sleep(every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ApiError;

    #[test]
    fn a_refusal_says_what_to_check() {
        let bad_token = ApiError::Refused(401, r#"{"error":"unauthorized"}"#.into()).to_string();
        assert!(
            bad_token.contains("not a valid API client token"),
            "{bad_token}"
        );
        let wrong_role = ApiError::Refused(403, r#"{"error":"forbidden"}"#.into()).to_string();
        assert!(
            wrong_role.contains("needs the `mediator` role"),
            "{wrong_role}"
        );
        let not_owner = ApiError::Refused(
            403,
            r#"{"error":"registered by another API client"}"#.into(),
        )
        .to_string();
        assert!(!not_owner.contains("role"), "{not_owner}");
    }
}
