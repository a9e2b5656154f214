//! [`Problem`]: what a client is told when a request is refused.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde_json::{Map, Value};

use super::json::{json_map_sorts_keys, push_json_member, push_json_string, Standard};
use super::type_base::{type_base, ABOUT_BLANK};
use super::{ProblemOr, ProblemType};
use crate::context::{Hex, RequestContext, RequestId, TraceId};

/// The media type of every problem body (RFC 9457, section 3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem: what a client is told when a request is refused.
///
/// ```
/// use http::StatusCode;
/// use tower_harden::error::{Problem, ProblemType};
///
/// let problem = Problem::of(ProblemType::INVALID_INPUT, StatusCode::UNPROCESSABLE_ENTITY)
///     .with_detail("item 3 is longer than 64 characters")
///     .with_member("item", 3);
/// let json: serde_json::Value = serde_json::from_slice(&problem.to_json()).unwrap();
/// assert_eq!(json["status"], 422);
/// assert_eq!(json["item"], 3);
/// ```
///
/// A problem type of the service's own: a slug under the configured
/// [type base](super::set_type_base), or a URI of its own; both with owned or
/// borrowed text.
///
/// ```
/// use http::StatusCode;
/// use tower_harden::error::Problem;
///
/// let sku = String::from("A-113");
/// let problem = Problem::new(StatusCode::CONFLICT, "out-of-stock", "Out of stock")
///     .with_type_uri("https://api.example.com/problems/out-of-stock")
///     .with_detail(format!("{sku} is out of stock"));
/// assert_eq!(problem.type_uri(), "https://api.example.com/problems/out-of-stock");
/// ```
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    slug: Cow<'static, str>,
    /// The whole `type` URI, when the problem does not take the base.
    type_uri: Option<Cow<'static, str>>,
    title: Cow<'static, str>,
    detail: Option<Cow<'static, str>>,
    request_id: Option<RequestId>,
    trace_id: Option<TraceId>,
    members: Map<String, Value>,
}

impl Problem {
    /// A problem of the given status and type. `slug` follows the
    /// [type base](super::type_base) in the `type` URI (this crate's
    /// documentation unless [`set_type_base`](super::set_type_base) chose
    /// another); `title` is the same for every occurrence of the type.
    pub fn new(
        status: StatusCode,
        slug: impl Into<Cow<'static, str>>,
        title: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            slug: slug.into(),
            type_uri: None,
            title: title.into(),
            detail: None,
            request_id: None,
            trace_id: None,
            members: Map::new(),
        }
    }

    /// A problem of one of this crate's types.
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_harden::error::{Problem, ProblemType};
    ///
    /// let problem = Problem::of(ProblemType::INVALID_INPUT, StatusCode::BAD_REQUEST);
    /// assert_eq!(problem.slug(), "invalid-input");
    /// ```
    pub fn of(kind: ProblemType, status: StatusCode) -> Self {
        Self::new(status, kind.slug(), kind.title())
    }

    /// The generic 500 problem: says nothing about the cause.
    pub fn internal_error() -> Self {
        Self::of(
            ProblemType::INTERNAL_ERROR,
            StatusCode::INTERNAL_SERVER_ERROR,
        )
        .with_detail("internal error")
    }

    /// Gives the problem a `type` URI of its own, which the
    /// [type base](super::set_type_base) does not change (the slug stays
    /// what [`slug`](Self::slug) reports, for logs and matching).
    pub fn with_type_uri(mut self, uri: impl Into<Cow<'static, str>>) -> Self {
        self.type_uri = Some(uri.into());
        self
    }

    /// Sets the human-readable explanation of this occurrence. It is shown to
    /// the client: never put internal error text here.
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds an extension member (RFC 9457, section 3.2). The reserved names
    /// `type`, `title`, `status`, `detail`, `instance`, `request_id` and
    /// `trace_id` are ignored here.
    pub fn with_member(mut self, name: &str, value: impl Into<Value>) -> Self {
        if !matches!(
            name,
            "type" | "title" | "status" | "detail" | "instance" | "request_id" | "trace_id"
        ) {
            self.members.insert(name.to_owned(), value.into());
        }
        self
    }

    /// Fills `request_id` and `trace_id` from a request's context.
    pub fn with_request_context(mut self, context: RequestContext) -> Self {
        self.request_id = context.request_id.or(self.request_id);
        self.trace_id = context.trace_id.or(self.trace_id);
        self
    }

    /// Sets the request id shown to the client.
    pub fn with_request_id(mut self, id: RequestId) -> Self {
        self.request_id = Some(id);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem type's short name, the fragment of its `type` URI.
    pub fn slug(&self) -> &str {
        &self.slug
    }

    /// The problem's `title`: for a problem of type `about:blank` (the
    /// [type base](super::set_type_base) set to it), the status phrase.
    pub fn title(&self) -> &str {
        match (&self.type_uri, type_base()) {
            (None, ABOUT_BLANK) => self.status.canonical_reason().unwrap_or(&self.title),
            _ => &self.title,
        }
    }

    /// The problem's `detail`, if set.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The full `type` URI.
    pub fn type_uri(&self) -> String {
        let mut uri = String::new();
        for part in self.type_parts() {
            uri.push_str(part);
        }
        uri
    }

    /// The `type` URI, in the pieces it is written from.
    fn type_parts(&self) -> [&str; 2] {
        match (&self.type_uri, type_base()) {
            (Some(uri), _) => [uri, ""],
            (None, ABOUT_BLANK) => [ABOUT_BLANK, ""],
            (None, base) => [base, &self.slug],
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Bytes {
        // Written straight from the fields, byte for byte what serde_json
        // writes for a `serde_json::Map` of them (same order, same escapes):
        // it runs for every refusal, and building the map, or serde's
        // per-byte escaping of text that needs none, cost more than the rest
        // of the refusal.
        let trace_hex = self.trace_id.map(|trace| trace.hex());
        let sorted = json_map_sorts_keys();
        let standard = self.standard_members(sorted, trace_hex.as_ref());
        let mut out = Vec::with_capacity(384);
        out.push(b'{');
        let mut members = self.members.iter().peekable();
        let mut first = true;
        let mut separate = |out: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
        };
        // Members never reuse the standard names (`with_member` refuses
        // them), so a merge by name is the map's order.
        for (name, value) in standard {
            let Some(value) = value else { continue };
            while let Some((member, member_value)) =
                members.next_if(|(member, _)| sorted && member.as_str() < name)
            {
                separate(&mut out);
                if push_json_member(&mut out, member, member_value).is_err() {
                    return Bytes::new();
                }
            }
            separate(&mut out);
            // The standard names need no escaping.
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            match value {
                Standard::Type => push_json_string(&mut out, &self.type_parts()),
                Standard::Text(text) => push_json_string(&mut out, &[text]),
                Standard::Plain(text) => {
                    out.push(b'"');
                    out.extend_from_slice(text.as_bytes());
                    out.push(b'"');
                }
                Standard::Status(status) => {
                    // A StatusCode is three digits, 100 to 999.
                    let digits = [status / 100, status / 10 % 10, status % 10];
                    out.extend(digits.map(|digit| b'0' + digit as u8));
                }
            }
        }
        for (member, member_value) in members {
            separate(&mut out);
            if push_json_member(&mut out, member, member_value).is_err() {
                return Bytes::new();
            }
        }
        out.push(b'}');
        Bytes::from(out)
    }

    /// The standard members, each with its `"name":` prefix, in the order
    /// a map writes them: by name, or as inserted (serde_json's
    /// `preserve_order`), where they come before the extension members.
    #[inline]
    fn standard_members<'a>(
        &'a self,
        sorted: bool,
        trace_hex: Option<&'a Hex<32>>,
    ) -> [(&'static str, Option<Standard<'a>>); 6] {
        if sorted {
            [
                ("detail", self.detail.as_deref().map(Standard::Text)),
                (
                    "request_id",
                    self.request_id
                        .as_ref()
                        .map(|id| Standard::Plain(id.as_str())),
                ),
                ("status", Some(Standard::Status(self.status.as_u16()))),
                ("title", Some(Standard::Text(self.title()))),
                (
                    "trace_id",
                    trace_hex.map(|hex| Standard::Plain(hex.as_str())),
                ),
                ("type", Some(Standard::Type)),
            ]
        } else {
            [
                ("type", Some(Standard::Type)),
                ("title", Some(Standard::Text(self.title()))),
                ("status", Some(Standard::Status(self.status.as_u16()))),
                ("detail", self.detail.as_deref().map(Standard::Text)),
                (
                    "request_id",
                    self.request_id
                        .as_ref()
                        .map(|id| Standard::Plain(id.as_str())),
                ),
                (
                    "trace_id",
                    trace_hex.map(|hex| Standard::Plain(hex.as_str())),
                ),
            ]
        }
    }

    /// The response: status, `Content-Type: application/problem+json`,
    /// `Cache-Control: no-store`, and the JSON body.
    pub fn into_response<B>(self) -> Response<ProblemOr<B>> {
        let mut response = Response::new(ProblemOr::problem(self.to_json()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// A handler's problem does not know its request: the observe layer fills in
/// `request_id` and `trace_id` on its way out.
#[cfg(feature = "axum")]
impl axum::response::IntoResponse for Problem {
    fn into_response(self) -> axum::response::Response {
        let awaiting = ProblemAwaitingContext(self.clone());
        let mut response =
            Problem::into_response::<axum::body::Body>(self).map(axum::body::Body::new);
        response.extensions_mut().insert(awaiting);
        response
    }
}

/// A problem response made without the request at hand (by a handler's
/// `IntoResponse`): the observe layer rewrites its body with the request id
/// and trace id.
#[derive(Debug, Clone)]
pub(crate) struct ProblemAwaitingContext(pub(crate) Problem);

#[cfg(test)]
mod tests {
    use super::*;
    use http::Extensions;
    use http_body_util::Full;

    /// The map-based body `to_json` wrote before it wrote the fields
    /// directly: the bytes must not change.
    fn to_json_through_a_map(problem: &Problem) -> Bytes {
        let mut object = Map::with_capacity(6 + problem.members.len());
        object.insert("type".into(), Value::String(problem.type_uri()));
        object.insert("title".into(), Value::String(problem.title().into()));
        object.insert("status".into(), Value::from(problem.status.as_u16()));
        if let Some(detail) = &problem.detail {
            object.insert("detail".into(), Value::String(detail.to_string()));
        }
        if let Some(id) = &problem.request_id {
            object.insert("request_id".into(), Value::String(id.as_str().into()));
        }
        if let Some(trace) = &problem.trace_id {
            object.insert("trace_id".into(), Value::String(trace.to_string()));
        }
        for (name, value) in &problem.members {
            object.insert(name.clone(), value.clone());
        }
        Bytes::from(serde_json::to_vec(&Value::Object(object)).unwrap())
    }

    #[test]
    fn json_is_byte_for_byte_what_a_map_writes() {
        let bare = Problem::new(StatusCode::TOO_MANY_REQUESTS, "quota-exceeded", "Too many");
        let full = Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "Too large")
            .with_detail("a \"quoted\" détail\nwith a \u{1b} control and \\ backslash")
            .with_request_id(RequestId::parse("req-1").unwrap())
            .with_request_context(RequestContext {
                request_id: None,
                trace_id: TraceId::from_bytes([7; 16]),
            })
            // Names sorting before, between and after the standard ones.
            .with_member("aaa", 1)
            .with_member("limit", 1_048_576u64)
            .with_member("retry_after", 3)
            .with_member("policies", serde_json::json!([{"name": "per-ip", "q": 50}]))
            .with_member("zzz", "last")
            .with_member("ünïcode", -1.5)
            .with_member("status", 999);
        // Text JSON writes as it is (non-ASCII, DEL) and text it escapes,
        // in a member's name too.
        let odd = Problem::new(StatusCode::BAD_REQUEST, "odd", "Odd")
            .with_detail("plain ünïcode and \u{7f} DEL")
            .with_member("quo\"te", "back\\slash")
            .with_member("tab\tname", "\u{1}");
        for problem in [bare, full, odd, Problem::internal_error()] {
            assert_eq!(problem.to_json(), to_json_through_a_map(&problem));
        }
    }

    #[test]
    fn body_has_the_rfc_9457_members() {
        let mut extensions = Extensions::new();
        extensions.insert(RequestId::parse("req-1").unwrap());
        let problem = Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
        )
        .with_detail("too big")
        .with_member("limit", 10)
        .with_member("status", 999)
        .with_request_context(RequestContext::from_extensions(&extensions));
        let json: Value = serde_json::from_slice(&problem.to_json()).unwrap();
        assert_eq!(
            json["type"],
            format!("{}payload-too-large", crate::error::TYPE_BASE)
        );
        assert_eq!(json["title"], "Payload too large");
        assert_eq!(json["status"], 413);
        assert_eq!(json["detail"], "too big");
        assert_eq!(json["request_id"], "req-1");
        assert_eq!(json["limit"], 10);
    }

    #[test]
    fn response_has_problem_headers() {
        let response = Problem::internal_error().into_response::<Full<Bytes>>();
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    }
}
