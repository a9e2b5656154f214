//! The storage interface of the rate limiter: what the layer asks of a
//! backend, and nothing about HTTP.
//!
//! A store keeps one GCRA state (a theoretical arrival time, see
//! [`Quota::decide`](crate::rate_limit::Quota::decide)) per `(policy, key)` and decides, for all the
//! policies of one request at once, whether the request is admitted.
//!
//! The in-process [`MemoryStore`](super::MemoryStore) answers at once with a
//! ready future. A network store (Redis) turns one call into one round trip:
//! every check of the request travels in one script invocation.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::rate_limit::gcra::{Decision, Quota};

// The stores. They use the types below; this file uses none of theirs
// (rate_limit/mod.rs re-exports them), so no file cycle.
pub(super) mod any;
pub(super) mod memory;
#[cfg(feature = "redis")]
pub mod redis;

/// The identity of a rate-limit key: 16 bytes of a keyed hash of the key
/// material (an IP prefix, an API key, a principal); see [`KeyHasher`](super::KeyHasher).
///
/// The raw key never reaches a store or a log. The hash is stable across
/// processes that share the hashing secret (see
/// [`KeyHasher`](super::KeyHasher)), so several processes can share one
/// network store. 128 bits make accidental collisions negligible; the
/// secret makes chosen ones impossible.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 16]);

impl KeyHash {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The full hash as 32 lowercase hex digits (for a Redis key).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// A short form for logs and refusal contexts: the first 6 bytes as
    /// 12 hex digits. Enough to correlate log lines, useless to recover the
    /// key.
    pub fn short(&self) -> String {
        hex(&self.0[..6])
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    text
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", self.short())
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// One policy's check of one request.
#[derive(Debug, Clone)]
pub struct Check {
    /// The policy's name (a fixed name chosen by the operator, such as
    /// `"per-ip"`). The store keeps the states of different policies apart
    /// even when their key hashes are equal.
    pub policy: Arc<str>,
    /// The key within the policy.
    pub key: KeyHash,
    /// The quota for this key (a resolver may give premium keys more).
    pub quota: Quota,
    /// What this request costs, in requests (usually 1; 0 only inspects).
    pub cost: u32,
}

/// The outcome of one [`RateLimitStore::check`] call: one [`Decision`] per
/// [`Check`], in the same order.
///
/// A single decision (the common case of one policy) is kept inline, so the
/// in-process store answers without a heap allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decisions {
    repr: DecisionsRepr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DecisionsRepr {
    One([Decision; 1]),
    Many(Vec<Decision>),
}

impl Decisions {
    /// Wraps the decisions, one per check, in the checks' order.
    pub fn new(decisions: Vec<Decision>) -> Self {
        Self {
            repr: DecisionsRepr::Many(decisions),
        }
    }

    /// The decision of a request with a single check.
    pub fn one(decision: Decision) -> Self {
        Self {
            repr: DecisionsRepr::One([decision]),
        }
    }

    /// Whether the request is admitted: every policy admitted it.
    pub fn allowed(&self) -> bool {
        self.as_slice().iter().all(|decision| decision.allowed)
    }

    /// One decision per check, in the checks' order.
    pub fn as_slice(&self) -> &[Decision] {
        match &self.repr {
            DecisionsRepr::One(one) => one,
            DecisionsRepr::Many(many) => many,
        }
    }

    /// The decisions.
    pub fn into_vec(self) -> Vec<Decision> {
        match self.repr {
            DecisionsRepr::One(one) => one.to_vec(),
            DecisionsRepr::Many(many) => many,
        }
    }

    /// The longest wait among the refusing policies, if any refused.
    pub fn retry_after(&self) -> Option<Duration> {
        self.as_slice()
            .iter()
            .filter(|decision| !decision.allowed)
            .map(|decision| decision.retry_after_ns)
            .max()
            .map(Duration::from_nanos)
    }
}

/// Why a store could not decide. The layer applies its failure policy to it
/// (the request is never answered with a 500 because of it).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time.
    #[error("the rate-limit store is unavailable")]
    Unavailable {
        /// What went wrong, for the log only (never shown to a client).
        reason: Arc<str>,
        /// When asking again may succeed (a breaker's remaining cool-down):
        /// a fail-closed refusal sends it as `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The backend answered with something the store does not understand.
    #[error("the rate-limit store answered with an invalid reply")]
    InvalidReply {
        /// What was wrong, for the log only.
        reason: Arc<str>,
    },
    /// The store refuses to track a new key (a full store with the
    /// [`OverflowPolicy::RefuseNewKeys`](super::OverflowPolicy) policy
    /// answers with a refusing decision instead; this variant is for stores
    /// that cannot decide at all).
    #[error("the rate-limit store is full")]
    Full,
}

impl StoreError {
    /// An unavailable-backend error with a reason for the log.
    pub fn unavailable(reason: impl Into<Arc<str>>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// Says when asking again may succeed (an unavailable backend only; a
    /// fail-closed refusal sends it as `Retry-After`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_harden::rate_limit::StoreError;
    ///
    /// let error = StoreError::unavailable("down").with_retry_after(Duration::from_secs(5));
    /// assert_eq!(error.retry_after(), Some(Duration::from_secs(5)));
    /// ```
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        if let Self::Unavailable { retry_after, .. } = &mut self {
            *retry_after = Some(after);
        }
        self
    }

    /// When asking again may succeed, if the store knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A backend that keeps rate-limit state and decides requests.
///
/// # Contract
///
/// - **One call per request.** [`check`](Self::check) receives every policy
///   that applies to the request, so a network store makes one round trip.
/// - **All or nothing.** If any check is refused, no check consumes quota:
///   the state stays as it was, and the decisions of the policies that
///   would have admitted the request describe their state as it is (what
///   a check of cost 0 reports), so that headers never show a consumption
///   that did not happen. If every check is admitted, every key's
///   state advances, atomically with respect to other calls on the same
///   keys (no other request can be admitted on the strength of a state this
///   call has read but not yet written).
/// - **GCRA semantics.** Decisions follow [`Quota::decide`] exactly, so the
///   layer's headers are the same whatever the backend. A store may use its
///   own clock (a network store should use the server's, so that processes
///   agree), but it must never go backwards.
/// - **Idle equals absent.** A key whose TAT is in the past may be dropped
///   at any time; that changes no decision.
/// - **Errors are typed.** A store never panics on a backend failure; it
///   answers [`StoreError`] and the layer applies its failure policy.
///
/// # Why an associated `'static` future and not a GAT or a boxed future
///
/// The layer's response future must be `'static` (tower and hyper spawn it),
/// so it has to own the store's future: a future borrowing `&self` or the
/// checks (`type Future<'a>`) could not be stored in it without
/// self-reference. A network store serializes the checks into its command
/// synchronously inside `check` and moves the command into its future, so
/// `'static` costs it nothing. An associated type (rather than
/// `Pin<Box<dyn Future>>`) keeps the in-process store free of a heap
/// allocation per request: its future is `std::future::Ready`, which the
/// layer resolves on the first poll. A store that prefers boxing can set
/// `type Future = BoxFuture<'static, ...>`.
///
/// # Implementing a network store
///
/// - Port [`Quota::decide`] as is (it is a dozen lines of saturating
///   integer arithmetic): with `T = emission_interval_nanos()`,
///   `τ = tolerance_nanos()`, `new_tat = max(tat, now) + cost·T`, admit iff
///   `new_tat - now ≤ τ`.
/// - Send every check of the call in one script invocation (Redis: one
///   `EVALSHA` with one key per check, for example
///   `{prefix}:{policy}:{key.to_hex()}`), read every TAT, decide, and write
///   only if all admit, so the script is the all-or-nothing transaction.
///   Set each written key's expiry to its `new_tat - now` (rounded up): an
///   expired key is an idle key, so expiry is lossless eviction.
/// - Take `now` from the server (Redis `TIME`), not from each process, so
///   processes with skewed clocks agree.
/// - Map timeouts and connection errors to [`StoreError::Unavailable`] and
///   malformed replies to [`StoreError::InvalidReply`]; the layer applies
///   its failure policy.
/// - Processes sharing the store must hash keys alike:
///   [`KeyHasher::from_secret`](super::KeyHasher::from_secret) with one
///   secret.
///
/// ```
/// use std::sync::Arc;
/// use tower_harden::rate_limit::{Check, KeyHash, MemoryStore, Quota, RateLimitStore};
///
/// # futures_util::FutureExt::now_or_never(async {
/// let store = MemoryStore::new(10_000);
/// let check = Check {
///     policy: Arc::from("per-ip"),
///     key: KeyHash([7; 16]),
///     quota: Quota::per_second(1).unwrap(),
///     cost: 1,
/// };
/// let first = store.check(std::slice::from_ref(&check)).await.unwrap();
/// assert!(first.allowed());
/// let second = store.check(std::slice::from_ref(&check)).await.unwrap();
/// assert!(!second.allowed());
/// # }).unwrap();
/// ```
pub trait RateLimitStore: Send + Sync + 'static {
    /// The future of one call.
    type Future: Future<Output = Result<Decisions, StoreError>> + Send + 'static;

    /// Decides one request against all its checks, all or nothing (see the
    /// trait's contract). `checks` is never empty.
    fn check(&self, checks: &[Check]) -> Self::Future;

    /// Decides at once, without a future, when the store can: the layer
    /// tries this first and, on `Some`, calls the inner service from its own
    /// `call` (no clone of the inner service, no extra state). `None` (the
    /// default) means "ask [`check`](Self::check)"; nothing was consumed.
    ///
    /// The in-process store always answers here. A network store can
    /// answer here from a local cache (a key known to be refused until some
    /// instant needs no round trip) and return `None` otherwise.
    fn try_check_now(&self, checks: &[Check]) -> Option<Result<Decisions, StoreError>> {
        let _ = checks;
        None
    }
}

impl<S: RateLimitStore + ?Sized> RateLimitStore for Arc<S> {
    type Future = S::Future;

    fn check(&self, checks: &[Check]) -> Self::Future {
        (**self).check(checks)
    }

    fn try_check_now(&self, checks: &[Check]) -> Option<Result<Decisions, StoreError>> {
        (**self).try_check_now(checks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hash_is_twelve_hex_digits() {
        let key = KeyHash([0xab; 16]);
        assert_eq!(key.short(), "abababababab");
        assert_eq!(key.to_hex().len(), 32);
        assert_eq!(format!("{key:?}"), "KeyHash(abababababab)");
    }
}
