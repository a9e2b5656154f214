//! # tower-harden
//!
//! Composable [tower] layers that make any HTTP service production-ready.
//!
//! [tower]: https://docs.rs/tower
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod config;
pub mod deadline;
pub mod input;
pub mod observe;
mod peer;
pub mod preset;
pub mod problem;
pub mod rate_limit;
pub mod refusal;
pub mod serve;

pub use config::{ConfigError, HardenConfig};
pub use peer::PeerAddr;
pub use preset::{Harden, HardenLayer, Hardened};
pub use serve::serve;
