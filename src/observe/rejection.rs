//! Error responses made without a problem body (axum's empty 404 and 405,
//! its plain-text extractor rejections) answered as problems.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::header::{HeaderMap, CONTENT_TYPE};
use http::StatusCode;
use http_body::Body;

use crate::error::{Problem, ProblemType};

/// The longest rejection text kept as a problem's `detail`; a longer text is
/// not a rejection message, and the problem goes without one.
const MAX_DETAIL_LEN: usize = 512;

/// The problem an error response without one stands for, if any: an empty
/// 404 or 405, or (`map_rejections`) a short plain-text rejection, whose
/// text is taken from `body` when it is at hand at once. `Err` gives the
/// body back when the response stays as it is.
pub(super) fn problem_for<B: Body<Data = bytes::Bytes>>(
    status: StatusCode,
    headers: &HeaderMap,
    body: B,
    map_rejections: bool,
) -> Result<Problem, B> {
    let content_type = headers.get(CONTENT_TYPE);
    let exact_len = body.size_hint().exact();
    if content_type.is_none() && exact_len == Some(0) {
        return match status {
            StatusCode::NOT_FOUND => {
                Ok(Problem::of(ProblemType::NOT_FOUND, status)
                    .with_detail("no resource at this path"))
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                Ok(Problem::of(ProblemType::METHOD_NOT_ALLOWED, status)
                    .with_detail("this resource does not take the request's method"))
            }
            _ => Err(body),
        };
    }
    if !map_rejections {
        return Err(body);
    }
    let kind = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => ProblemType::INVALID_INPUT,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemType::UNSUPPORTED_MEDIA_TYPE,
        StatusCode::PAYLOAD_TOO_LARGE => ProblemType::PAYLOAD_TOO_LARGE,
        _ => return Err(body),
    };
    let plain_text = content_type
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .get(..10)
                .is_some_and(|start| start.eq_ignore_ascii_case("text/plain"))
        });
    if !plain_text || exact_len.is_none_or(|len| len > MAX_DETAIL_LEN as u64) {
        return Err(body);
    }
    let problem = Problem::of(kind, status);
    Ok(match text_at_hand(body) {
        Some(text) => problem.with_detail(text),
        None => problem,
    })
}

/// The whole of a short body, if its one frame is ready now (axum's
/// rejections are one buffer).
fn text_at_hand<B: Body<Data = bytes::Bytes>>(body: B) -> Option<String> {
    // The body is replaced by the problem whatever this finds, so pinning
    // it here, where it is dropped, is all it needs.
    let mut body = pin!(body);
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) else {
        return None;
    };
    let data = frame.into_data().ok()?;
    if !body.is_end_stream() {
        return None;
    }
    let text = std::str::from_utf8(&data).ok()?.trim();
    (!text.is_empty() && text.len() <= MAX_DETAIL_LEN).then(|| text.to_owned())
}
