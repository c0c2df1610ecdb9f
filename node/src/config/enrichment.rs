//! The `[enrichment]` section: the optional enrichment call (off unless `url` is set),
//! and its translation into the pipeline's [`EnrichmentConfig`].

use std::time::Duration;

use chorus_actors::enrichment::{EnrichmentConfig, EnrichmentConfigError};
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The enrichment service. Its breaker (open 60 s after 5 failures in a row) and
/// bulkhead (10 calls at once, 100 waiting) use the design's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichmentSection {
    /// Where each accepted item is POSTed as JSON (`http://…`); unset = off (default).
    pub url: Option<String>,
    /// Longest one call may take, in milliseconds (default 2000).
    #[serde(deserialize_with = "super::units::millis")]
    pub timeout_ms: u64,
}

impl Default for EnrichmentSection {
    fn default() -> Self {
        EnrichmentSection {
            url: None,
            timeout_ms: chorus_actors::enrichment::DEFAULT_TIMEOUT.as_millis() as u64,
        }
    }
}

impl EnrichmentSection {
    /// The pipeline's enrichment settings, or the key that makes them impossible.
    pub fn to_enrichment(&self) -> Result<EnrichmentConfig, ConfigError> {
        let config = EnrichmentConfig {
            url: self.url.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            ..EnrichmentConfig::default()
        };
        config.validate().map_err(|e| {
            let key = match &e {
                EnrichmentConfigError::Url(_) => "enrichment.url",
                EnrichmentConfigError::Timeout => "enrichment.timeout_ms",
                EnrichmentConfigError::Breaker(_) | EnrichmentConfigError::Bulkhead(_) => {
                    "enrichment"
                }
            };
            let reason = match e {
                EnrichmentConfigError::Url(reason) => reason,
                other => other.to_string(),
            };
            ConfigError::new(key, reason)
        })?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_with_a_two_second_timeout() {
        let config = EnrichmentSection::default().to_enrichment().unwrap();
        assert!(config.url.is_none());
        assert_eq!(config.timeout, Duration::from_secs(2));
    }

    #[test]
    fn a_bad_url_names_its_key() {
        for url in ["not a url", "ftp://host/x", "https://host/x"] {
            let section = EnrichmentSection {
                url: Some(url.into()),
                ..EnrichmentSection::default()
            };
            assert_eq!(section.to_enrichment().unwrap_err().key, "enrichment.url");
        }
    }

    #[test]
    fn a_zero_timeout_names_its_key() {
        let section = EnrichmentSection {
            url: Some("http://127.0.0.1:9/enrich".into()),
            timeout_ms: 0,
        };
        assert_eq!(
            section.to_enrichment().unwrap_err().key,
            "enrichment.timeout_ms"
        );
    }
}
