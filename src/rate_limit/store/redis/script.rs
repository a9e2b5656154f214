//! The GCRA script, the Redis keys, and the arguments of one script call.

use super::super::{Check, KeyHash};

/// The GCRA script the store runs (Lua, for `EVAL`/`EVALSHA`).
pub const GCRA_SCRIPT: &str = include_str!("gcra.lua");

pub(super) fn redis_key(prefix: &str, policy: &str, key: &KeyHash) -> String {
    let mut text = String::with_capacity(prefix.len() + policy.len() + 38);
    text.push_str(prefix);
    text.push_str(":{");
    text.push_str(&key.to_hex());
    text.push_str("}:");
    text.push_str(policy);
    text
}

/// The arguments of one script call.
pub(super) struct ScriptCall {
    pub(super) keys: Vec<String>,
    args: Vec<String>,
}

impl ScriptCall {
    pub(super) fn new(prefix: &str, checks: &[&Check], now_override: Option<u64>) -> Self {
        let mut keys = Vec::with_capacity(checks.len());
        let mut args = Vec::with_capacity(1 + 3 * checks.len());
        args.push(match now_override {
            Some(now) => format!("{now:010}"),
            None => "0".to_owned(),
        });
        for check in checks {
            keys.push(redis_key(prefix, &check.policy, &check.key));
            let interval = check.quota.emission_interval_nanos();
            args.push(interval.to_string());
            args.push(check.quota.tolerance_nanos().to_string());
            args.push(interval.saturating_mul(u64::from(check.cost)).to_string());
        }
        Self { keys, args }
    }

    pub(super) fn command(&self, name: &str, script: &str) -> redis::Cmd {
        let mut command = redis::cmd(name);
        command.arg(script).arg(self.keys.len());
        for key in &self.keys {
            command.arg(key);
        }
        for arg in &self.args {
            command.arg(arg);
        }
        command
    }
}

/// The script calls of one request, each with the positions of its checks
/// in the request: one call for all checks, or (Redis Cluster, see
/// `RedisStoreBuilder::cluster`) one call per key.
pub(super) fn calls_for(
    prefix: &str,
    cluster: bool,
    checks: &[Check],
) -> Vec<(Vec<usize>, ScriptCall)> {
    if !cluster || checks.iter().all(|check| check.key == checks[0].key) {
        let refs: Vec<&Check> = checks.iter().collect();
        return vec![(
            (0..checks.len()).collect(),
            ScriptCall::new(prefix, &refs, None),
        )];
    }
    let mut groups: Vec<(KeyHash, Vec<usize>)> = Vec::new();
    for (index, check) in checks.iter().enumerate() {
        match groups.iter_mut().find(|(key, _)| *key == check.key) {
            Some((_, indices)) => indices.push(index),
            None => groups.push((check.key, vec![index])),
        }
    }
    groups
        .into_iter()
        .map(|(_, indices)| {
            let refs: Vec<&Check> = indices.iter().map(|&index| &checks[index]).collect();
            let call = ScriptCall::new(prefix, &refs, None);
            (indices, call)
        })
        .collect()
}
