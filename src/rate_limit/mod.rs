//! Keyed rate limiting: exact under concurrency, memory bounded whatever
//! keys arrive.
//!
//! - [`gcra`]: the algorithm over integer nanoseconds, shared by every
//!   backend.
//! - [`RateLimitStore`]: what the layer asks of a backend; one call per
//!   request, all policies at once, all or nothing.
//! - [`MemoryStore`]: the bounded in-process store.

pub mod gcra;
mod key;
mod memory;
mod store;

pub use gcra::{Clock, Decision, ManualClock, MonotonicClock, Quota, QuotaError};
pub use key::{
    ClientIpError, CustomKeyFn, IpGrouping, KeyHasher, KeySource, PeerAddr, Principal, ProxyHeader,
    RequestHead, TrustedProxies, DEFAULT_MAX_HOPS,
};
pub use memory::{MemoryStore, OverflowPolicy};
pub use store::{Check, Decisions, KeyHash, RateLimitStore, StoreError};
