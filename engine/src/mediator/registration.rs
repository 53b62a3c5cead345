//! What a mediator sends to `POST /api/mediators`: OpenHIM's registration document, field for
//! field (camelCase), so that a mediator written for OpenHIM sends it here unchanged (only its
//! authentication differs: a bearer token, see `mediators/README.md`).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::config::{validate_config, validate_defs, ConfigDef};
use super::MediatorError;

/// OpenHIM's `mediatorConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// The mediator's identity, e.g. `urn:mediator:fhir-validator`; channels route by it.
    pub urn: String,
    /// SemVer `x.y.z`, as OpenHIM requires.
    pub version: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Where the mediator listens; a channel destination picks one by name.
    pub endpoints: Vec<Endpoint>,
    /// OpenHIM channel documents the mediator suggests. Kept and shown, not applied: Orbiter's
    /// channels are TOML files under review, not objects a mediator may create.
    #[serde(default)]
    pub default_channel_config: Vec<Value>,
    /// The settings an admin may change (`PUT /api/mediators/{urn}/config`) and their types.
    #[serde(default)]
    pub config_defs: Vec<ConfigDef>,
    /// The mediator's default config (checked against `configDefs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Map<String, Value>>,
}

/// One place a mediator answers (OpenHIM's route definition).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    /// OpenHIM mediators send it as a number or as a string (`"8500"`).
    #[serde(deserialize_with = "port_number_or_string")]
    pub port: u16,
    /// Path on the mediator; `/` when unset.
    #[serde(default)]
    pub path: Option<String>,
    /// `http` is the one Orbiter can call.
    #[serde(rename = "type", default = "http")]
    pub kind: String,
    /// `true`: call it over https.
    #[serde(default)]
    pub secured: bool,
    /// Anything else OpenHIM allows here (`forwardAuthHeader`, `status`...), kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn http() -> String {
    "http".into()
}

fn port_number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| serde::de::Error::custom("port must be 1-65535")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom("port must be 1-65535")),
        _ => Err(serde::de::Error::custom("port must be a number")),
    }
}

impl Endpoint {
    /// `http(s)://host:port/path`.
    pub fn url(&self) -> String {
        let scheme = if self.secured { "https" } else { "http" };
        let path = self.path.as_deref().unwrap_or("/");
        let slash = if path.starts_with('/') { "" } else { "/" };
        // An IPv6 literal needs brackets in a URL.
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}{slash}{path}", self.port)
    }
}

impl Registration {
    /// The checks OpenHIM makes, plus what Orbiter needs to call the endpoints.
    pub fn validate(&self) -> Result<(), MediatorError> {
        let invalid = |m: String| Err(MediatorError::Invalid(m));
        if !valid_urn(&self.urn) {
            return invalid(format!(
                "urn `{}` must look like `urn:<namespace>:<name>` (no spaces or slashes)",
                self.urn
            ));
        }
        if !is_semver(&self.version) {
            return invalid("version is required, in SemVer form x.y.z".into());
        }
        if self.name.trim().is_empty() {
            return invalid("name is required".into());
        }
        if self.endpoints.is_empty() {
            return invalid("at least 1 endpoint is required".into());
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if endpoint.name.trim().is_empty() || endpoint.host.trim().is_empty() {
                return invalid(format!("endpoint {i} needs a name and a host"));
            }
            if endpoint.port == 0 {
                return invalid(format!("endpoint `{}` needs a port", endpoint.name));
            }
            // Caught here rather than on the first delivery, where it only shows as a failure.
            if endpoint.host.contains("://")
                || endpoint
                    .host
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '@'))
            {
                return invalid(format!(
                    "endpoint `{}`: host `{}` must be a host name or an IP address, without \
                     scheme or path (`path` and `secured: true` say the rest)",
                    endpoint.name, endpoint.host
                ));
            }
            if !OPENHIM_TYPES.contains(&endpoint.kind.as_str()) {
                return invalid(format!(
                    "endpoint `{}`: type `{}` is not one of OpenHIM's ({}); for https use \
                     type `http` with `secured: true`",
                    endpoint.name,
                    endpoint.kind,
                    OPENHIM_TYPES.join(", ")
                ));
            }
            if self.endpoints[..i].iter().any(|e| e.name == endpoint.name) {
                return invalid(format!("endpoint name `{}` is used twice", endpoint.name));
            }
        }
        validate_defs(&self.config_defs)?;
        if let Some(config) = &self.config {
            validate_config(&self.config_defs, config)?;
        }
        Ok(())
    }
}

/// OpenHIM's route types. Orbiter calls `http` ones; the others are kept for mediators that
/// also serve OpenHIM.
const OPENHIM_TYPES: [&str; 4] = ["http", "tcp", "mllp", "kafka"];

/// `urn:` then at least two more colon-separated parts; it goes into URL paths, so no `/`,
/// `?`, `#` or whitespace.
pub fn valid_urn(urn: &str) -> bool {
    urn.len() <= 256
        && urn.starts_with("urn:")
        && urn.split(':').filter(|p| !p.is_empty()).count() >= 3
        && !urn
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '%'))
}

/// `x.y.z` with an optional `-pre` or `+build` suffix.
fn is_semver(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// SemVer order of the `x.y.z` core (pre-release suffixes are not ranked).
pub fn version_core(version: &str) -> (u64, u64, u64) {
    let mut parts = version
        .split(['-', '+'])
        .next()
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn openhim_example() -> Value {
        // The shape of OpenHIM's own mediator registration tests, string port included.
        json!({
            "urn": "urn:mediator:awesome-test-mediator",
            "version": "1.0.0",
            "name": "Awesome Test Mediator",
            "description": "This is a test mediator. It is awesome.",
            "endpoints": [{"name": "The Endpoint", "host": "localhost", "port": "9000",
                           "type": "http", "forwardAuthHeader": false}],
            "defaultChannelConfig": [{"name": "Awesome", "urlPattern": "/awesome", "routes": []}],
            "configDefs": [{"param": "param1", "displayName": "P1", "type": "string"}],
            "config": {"param1": "val1"}
        })
    }

    #[test]
    fn an_openhim_registration_parses_and_validates() {
        let reg: Registration = serde_json::from_value(openhim_example()).unwrap();
        reg.validate().unwrap();
        assert_eq!(reg.endpoints[0].port, 9000);
        assert_eq!(reg.endpoints[0].url(), "http://localhost:9000/");
        assert_eq!(reg.endpoints[0].extra["forwardAuthHeader"], false);
        assert_eq!(reg.default_channel_config.len(), 1);
        // Round-trips in OpenHIM's field names.
        let back = serde_json::to_value(&reg).unwrap();
        assert_eq!(back["configDefs"][0]["param"], "param1");
        assert_eq!(back["endpoints"][0]["type"], "http");
    }

    #[test]
    fn bad_registrations_say_why() {
        for (change, expected) in [
            (json!({"urn": "mediator-1"}), "urn"),
            (json!({"urn": "urn:mediator:a/b"}), "urn"),
            (json!({"version": "1.0"}), "SemVer"),
            (json!({"name": " "}), "name"),
            (json!({"endpoints": []}), "endpoint"),
            (json!({"config": {"param1": 5}}), "param1"),
            (json!({"config": {"other": "x"}}), "other"),
            (
                json!({"endpoints": [{"name": "e", "host": "http://med", "port": 80}]}),
                "without scheme",
            ),
            (
                json!({"endpoints": [{"name": "e", "host": "med/x", "port": 80}]}),
                "host name",
            ),
            (
                json!({"endpoints": [{"name": "e", "host": "med", "port": 443, "type": "https"}]}),
                "secured: true",
            ),
        ] {
            let mut doc = openhim_example();
            for (k, v) in change.as_object().unwrap() {
                doc[k] = v.clone();
            }
            let reg: Registration = serde_json::from_value(doc).unwrap();
            let err = reg.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{change}: {err}");
        }
    }

    #[test]
    fn endpoint_urls_and_versions() {
        let mut e: Endpoint = serde_json::from_value(
            json!({"name": "v", "host": "::1", "port": 8600, "path": "validate", "secured": true}),
        )
        .unwrap();
        assert_eq!(e.url(), "https://[::1]:8600/validate");
        e.secured = false;
        e.host = "med".into();
        e.path = Some("/a/b".into());
        assert_eq!(e.url(), "http://med:8600/a/b");
        assert!(version_core("1.10.0") > version_core("1.9.7"));
        assert!(is_semver("2.0.1-rc.1") && !is_semver("2.x.1"));
    }
}
