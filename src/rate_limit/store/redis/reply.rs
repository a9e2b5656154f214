//! Reading the script's replies: five numbers per check.

use std::sync::Arc;

use redis::Value;

use super::super::{Check, Decisions, StoreError};
use crate::rate_limit::gcra::Decision;

fn describe(value: &Value) -> String {
    match value {
        Value::Array(values) => format!("an array of {} values", values.len()),
        other => {
            let text = format!("{other:?}");
            text.chars().take(80).collect()
        }
    }
}

/// The values of a script reply for `checks` checks: an array of five per
/// check, or an invalid reply.
pub(super) fn script_values(reply: Value, checks: usize) -> Result<Vec<Value>, StoreError> {
    match reply {
        Value::Array(values) if values.len() == checks * 5 => Ok(values),
        other => Err(StoreError::InvalidReply {
            reason: Arc::from(format!(
                "the rate-limit script answered {}",
                describe(&other)
            )),
        }),
    }
}

pub(super) fn parse_decisions(values: &[Value], checks: &[Check]) -> Result<Decisions, StoreError> {
    let mut decisions = Vec::with_capacity(checks.len());
    for (check, fields) in checks.iter().zip(values.chunks_exact(5)) {
        decisions.push(parse_decision(check, fields)?);
    }
    Ok(match decisions.len() {
        1 => Decisions::one(decisions[0]),
        _ => Decisions::new(decisions),
    })
}

fn parse_decision(check: &Check, fields: &[Value]) -> Result<Decision, StoreError> {
    let invalid = || StoreError::InvalidReply {
        reason: Arc::from("the rate-limit script answered a value that is not a number"),
    };
    let number = |value: &Value| -> Result<u64, StoreError> {
        match value {
            Value::Int(number) => Ok(u64::try_from(*number).unwrap_or(0)),
            Value::BulkString(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(invalid),
            _ => Err(invalid()),
        }
    };
    Ok(Decision {
        allowed: number(&fields[0])? == 1,
        limit: check.quota.burst(),
        remaining: u32::try_from(number(&fields[1])?).unwrap_or(u32::MAX),
        reset_after_ns: number(&fields[2])?,
        retry_after_ns: number(&fields[3])?,
        new_tat: number(&fields[4])?,
    })
}

/// The reply of one call of a split request, with the positions of its
/// checks in the request.
pub(super) type CallReply = (Vec<usize>, Result<Vec<Value>, StoreError>);

pub(super) fn merge_replies(
    replies: Vec<CallReply>,
    checks: &[Check],
) -> Result<Decisions, StoreError> {
    let mut decisions: Vec<Option<Decision>> = vec![None; checks.len()];
    for (indices, reply) in replies {
        let values = reply?;
        for (position, &index) in indices.iter().enumerate() {
            let fields = &values[position * 5..position * 5 + 5];
            decisions[index] = Some(parse_decision(&checks[index], fields)?);
        }
    }
    Ok(Decisions::new(
        decisions
            .into_iter()
            .map(|decision| decision.expect("every check belongs to one call"))
            .collect(),
    ))
}
