//! # tower-harden
//!
//! Composable [tower] layers that make any HTTP service production-ready.
//!
//! [tower]: https://docs.rs/tower
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod deadline;
pub mod input;
pub mod observe;
pub mod problem;
pub mod rate_limit;
pub mod refusal;
pub mod serve;

pub use serve::{serve, PeerAddr};
