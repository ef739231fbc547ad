//! The usage records' options, checked once into [`UsageConfig`]: where the webhook is,
//! how it is authenticated, and how records are batched and queued for it.

use super::api::Secret;
use super::defaults as d;
use super::error::{ConfigError, err};
use super::raw::RawConfig;
use std::path::PathBuf;
use std::time::Duration;

/// Records per request and records queued, at most (a record is a few hundred bytes).
const MAX_BATCH: usize = 10_000;
const MAX_QUEUE: usize = 1_000_000;

/// Where usage records go besides the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageConfig {
    /// `usage-webhook`: `None` when records are only logged.
    pub webhook: Option<WebhookConfig>,
}

/// `usage-webhook` and its companions.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// An `http://` or `https://` URL with a host.
    pub url: hyper::Uri,
    /// Sent as `Authorization: Bearer <secret>`.
    pub secret: Option<Secret>,
    /// Certificate authorities to check an `https://` receiver against instead of the
    /// built-in roots (read when the server starts).
    pub ca_file: Option<PathBuf>,
    /// Records per request, at most.
    pub batch: usize,
    /// How long a record waits for its batch to fill (zero: not at all).
    pub interval: Duration,
    /// Records waiting to be sent, at most; more are dropped (and counted).
    pub queue: usize,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry credentials in its query: only its scheme and host show.
        f.debug_struct("WebhookConfig")
            .field("scheme", &self.url.scheme_str())
            .field("host", &self.url.host())
            .field("batch", &self.batch)
            .field("interval", &self.interval)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// Checks the usage options.
pub fn from_raw(raw: &RawConfig) -> Result<UsageConfig, ConfigError> {
    let Some(url) = &raw.usage_webhook else {
        let companions = [
            ("usage-webhook-secret", raw.usage_webhook_secret.is_some()),
            ("usage-webhook-ca-file", raw.usage_webhook_ca_file.is_some()),
            ("usage-webhook-batch", raw.usage_webhook_batch.is_some()),
            (
                "usage-webhook-interval",
                raw.usage_webhook_interval.is_some(),
            ),
            ("usage-webhook-queue", raw.usage_webhook_queue.is_some()),
        ];
        if let Some((key, _)) = companions.iter().find(|(_, set)| *set) {
            return err(key, "configures the usage webhook: set usage-webhook too");
        }
        return Ok(UsageConfig::default());
    };
    let url: hyper::Uri = url
        .parse()
        .map_err(|e| ConfigError::new("usage-webhook", format!("not a URL: {e}")))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
        return err(
            "usage-webhook",
            "must be an http:// or https:// URL with a host",
        );
    }
    if url.authority().is_some_and(|a| a.as_str().contains('@')) {
        return err(
            "usage-webhook",
            "must not carry credentials: use usage-webhook-secret",
        );
    }
    if raw.usage_webhook_ca_file.is_some() && url.scheme_str() != Some("https") {
        return err(
            "usage-webhook-ca-file",
            "applies to an https:// webhook only",
        );
    }
    let secret = match &raw.usage_webhook_secret {
        // It goes into an HTTP header.
        Some(s) if s.is_empty() || !s.chars().all(|c| c.is_ascii_graphic()) => {
            return err(
                "usage-webhook-secret",
                "must be printable ASCII without spaces, and not empty",
            );
        }
        s => s.clone().map(Secret::new),
    };
    let batch = match raw.usage_webhook_batch.unwrap_or(d::USAGE_WEBHOOK_BATCH) {
        n @ 1..=MAX_BATCH => n,
        _ => return err("usage-webhook-batch", format!("must be 1 to {MAX_BATCH}")),
    };
    let queue = match raw.usage_webhook_queue.unwrap_or(d::USAGE_WEBHOOK_QUEUE) {
        n @ 1..=MAX_QUEUE => n,
        _ => return err("usage-webhook-queue", format!("must be 1 to {MAX_QUEUE}")),
    };
    let interval = match raw
        .usage_webhook_interval
        .unwrap_or(d::USAGE_WEBHOOK_INTERVAL)
    {
        s @ 0..=3600 => Duration::from_secs(s),
        _ => return err("usage-webhook-interval", "must be at most 3600 seconds"),
    };
    Ok(UsageConfig {
        webhook: Some(WebhookConfig {
            url,
            secret,
            ca_file: raw.usage_webhook_ca_file.clone(),
            batch,
            interval,
            queue,
        }),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::time::Duration;

    const BASE: &str = "listening-ip = [\"127.0.0.1\"]\nstatic-auth-secret = [\"s\"]\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::from_toml_str(&format!("{BASE}{extra}\n")).map_err(|e| e.to_string())
    }

    #[test]
    fn off_by_default_and_defaults_apply() {
        assert_eq!(parse("").unwrap().usage.webhook, None);
        let c = parse("usage-webhook = \"https://billing.example/turn\"").unwrap();
        let w = c.usage.webhook.unwrap();
        assert_eq!(w.url.host(), Some("billing.example"));
        assert_eq!((w.batch, w.queue), (100, 10_000));
        assert_eq!(w.interval, Duration::from_secs(1));
        assert!(w.secret.is_none());
        assert!(!format!("{w:?}").contains("turn\""));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (extra, key) in [
            ("usage-webhook = \"ftp://x/\"", "usage-webhook"),
            ("usage-webhook = \"not a url\"", "usage-webhook"),
            ("usage-webhook = \"https://u:p@x/\"", "usage-webhook"),
            ("usage-webhook-secret = \"s\"", "usage-webhook-secret"),
            (
                "usage-webhook = \"http://x/\"\nusage-webhook-batch = 0",
                "usage-webhook-batch",
            ),
            (
                "usage-webhook = \"http://x/\"\nusage-webhook-queue = 0",
                "usage-webhook-queue",
            ),
            (
                "usage-webhook = \"http://x/\"\nusage-webhook-interval = 99999",
                "usage-webhook-interval",
            ),
            (
                "usage-webhook = \"http://x/\"\nusage-webhook-ca-file = \"ca.pem\"",
                "usage-webhook-ca-file",
            ),
            (
                "usage-webhook = \"http://x/\"\nusage-webhook-secret = \"\"",
                "usage-webhook-secret",
            ),
        ] {
            let e = parse(extra).unwrap_err();
            assert!(e.contains(key), "{extra}: {e}");
        }
    }
}
