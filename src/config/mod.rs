//! [`HardenConfig`]: the whole stack's settings, from TOML or anything serde
//! reads, typed when read and checked when the stack is built.
//!
//! Durations are strings in [humantime] form (`"10s"`, `"250ms"`, `"1m 30s"`);
//! sizes are bytes as an integer or a string with a unit (`"1MiB"`, `"16 KiB"`,
//! `"2MB"`); networks are CIDRs (`"10.0.0.0/8"`, a bare address is a /32 or
//! /128). Every field has a default that is safe in production (the
//! defaults are the values in `examples/harden.toml`, and
//! `HardenConfig::default()`, taken from the layers' own constants);
//! unknown keys are refused, never ignored.
//!
//! Problems are reported all at once, each with its key path
//! (`rate_limit.policies[0].burst`) and, for a file, its line and column
//! ([`ConfigErrors`]):
//!
//! - reading ([`HardenConfig::from_toml`]) refuses unknown keys and values
//!   that are not what their key holds: a malformed size, duration, CIDR or
//!   header name, a keyword not in its list (the error lists the allowed
//!   ones);
//! - building the stack ([`Harden::from_config`](crate::Harden::from_config))
//!   checks the values together: a zero quota, a burst of zero, a limit of
//!   zero, `fallback` without Redis, two policies with one name.
//!
//! Nothing panics and nothing falls back to a default silently.
//!
//! ```
//! use tower_harden::HardenConfig;
//!
//! let config = HardenConfig::from_toml(r#"
//!     [input]
//!     max_body = "4MiB"
//!
//!     [deadline]
//!     request = "2s"
//!
//!     [[rate_limit.policies]]
//!     name = "per-ip"
//!     key = "client_ip"
//!     quota = 10
//!     period = "1s"
//!     burst = 20
//!
//!     ## IPv6 clients: each /64 above, and their whole /48 here (one
//!     ## allocation cannot take a quota per /64 it holds).
//!     [[rate_limit.policies]]
//!     name = "per-site"
//!     key = "client_ip"
//!     ipv6_prefix = 48
//!     quota = 40
//!     period = "1s"
//!     burst = 80
//! "#).unwrap();
//! let harden = tower_harden::Harden::from_config(&config).unwrap();
//! # drop(harden);
//!
//! let bad = HardenConfig::from_toml("[[rate_limit.policies]]\nname = \"x\"\nburst = 0\n").unwrap();
//! let error = tower_harden::Harden::from_config(&bad).unwrap_err();
//! assert_eq!(error.key(), "rate_limit.policies[0].burst");
//! assert_eq!(
//!     error.to_string(),
//!     "invalid configuration: rate_limit.policies[0].burst (line 3, column 9): must be greater than zero"
//! );
//!
//! let errors = HardenConfig::from_toml(
//!     "[rate_limit]\nbackend = \"memcached\"\nmax_keyz = 5\n",
//! )
//! .unwrap_err();
//! assert_eq!(errors.len(), 2);
//! assert_eq!(
//!     errors.to_string(),
//!     "invalid configuration (2 problems):\n  \
//!      rate_limit.backend (line 2, column 11): unknown value `memcached`, expected one of `memory`, `redis`\n  \
//!      rate_limit.max_keyz (line 3, column 1): unknown key `max_keyz`, expected one of `backend`, `redis_url`, \
//!      `redis_cluster_nodes`, `key_secret_env`, `redis_timeout`, `on_store_failure`, `fallback_share`, `max_keys`, `trusted_proxies`, \
//!      `proxy_header`, `ipv6_prefix`, `shadow`, `policies`"
//! );
//! ```
//!
//! [humantime]: https://docs.rs/humantime

pub(crate) mod build;
mod error;
mod model;
mod problems;
#[cfg(feature = "toml")]
mod read;
pub(crate) mod value;

pub(crate) use error::Problems;
pub use error::{ConfigError, ConfigErrors, Position};
pub use model::{
    Backend, DeadlineConfig, HardenConfig, InputConfig, KeyKind, ObserveConfig, OverloadConfig,
    PolicyConfig, RateLimitConfig, RedactConfig, ReservedConfig, StoreFailurePolicy,
};

pub use problems::ProblemsConfig;

impl HardenConfig {
    /// Reads a configuration from TOML text. Every unknown key and every
    /// value that is not what its key holds is reported, together, with
    /// its key path, line and column.
    #[cfg(feature = "toml")]
    pub fn from_toml(text: &str) -> Result<Self, ConfigErrors> {
        read::from_toml(text)
    }

    /// Reads a TOML file; see [`HardenConfig::from_toml`].
    #[cfg(feature = "toml")]
    pub fn from_toml_file(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigErrors> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| {
            let path = path.display().to_string();
            ConfigError::new(value::echo(&path), error.to_string())
        })?;
        Self::from_toml(&text)
    }
}
