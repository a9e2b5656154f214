//! This crate's problem types, as one list.

/// One of this crate's problem types: the fragment of its `type` URI (an
/// anchor in the [`error`](crate::error) module's documentation) and its
/// `title`, the same for every occurrence.
///
/// ```
/// use tower_harden::error::ProblemType;
///
/// assert_eq!(ProblemType::QUOTA_EXCEEDED.slug(), "quota-exceeded");
/// assert!(ProblemType::QUOTA_EXCEEDED.uri().ends_with("#quota-exceeded"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProblemType {
    slug: &'static str,
    title: &'static str,
}

impl ProblemType {
    /// 413: a body over its limit, declared or streamed, wire or decoded.
    pub const PAYLOAD_TOO_LARGE: Self = Self::new("payload-too-large", "Payload too large");
    /// 415: a `Content-Encoding` the server does not decode.
    pub const UNSUPPORTED_ENCODING: Self =
        Self::new("unsupported-encoding", "Unsupported content encoding");
    /// 400: a body that could not be read (broken framing, a corrupt
    /// compressed stream).
    pub const MALFORMED_BODY: Self = Self::new("malformed-body", "Malformed request body");
    /// 431: too many header fields or too many header bytes.
    pub const HEADERS_TOO_LARGE: Self =
        Self::new("headers-too-large", "Request header fields too large");
    /// 414: a request target longer than the limit.
    pub const URI_TOO_LONG: Self = Self::new("uri-too-long", "URI too long");
    /// 408: the client sent its body too slowly.
    pub const REQUEST_TIMEOUT: Self = Self::new("request-timeout", "Request timeout");
    /// 503 (or 504): no answer within the request deadline.
    pub const DEADLINE_EXCEEDED: Self = Self::new("deadline-exceeded", "Deadline exceeded");
    /// 429: a rate-limit policy refused the request.
    pub const QUOTA_EXCEEDED: Self = Self::new("quota-exceeded", "Quota exceeded");
    /// 400 or 422: a handler (or a rate-limit key rule) refused the content
    /// of a request.
    pub const INVALID_INPUT: Self = Self::new("invalid-input", "Invalid input");
    /// 500: a handler failed or panicked.
    pub const INTERNAL_ERROR: Self = Self::new("internal-error", "Internal error");
    /// 503: a dependency (the rate-limit store) is unavailable.
    pub const SERVICE_UNAVAILABLE: Self = Self::new("service-unavailable", "Service unavailable");
    /// 503: the service had as many requests in flight as it can take; the
    /// request was shed at once (with `Retry-After`).
    pub const OVERLOADED: Self = Self::new("overloaded", "Service overloaded");
    /// 429: the client already had as many requests in flight as one client
    /// may (with `Retry-After`).
    pub const TOO_MANY_IN_FLIGHT: Self =
        Self::new("too-many-in-flight", "Too many requests in flight");

    /// 404: no route matches the request's path (axum's fallback, answered
    /// through the [`ObserveLayer`](crate::observe::ObserveLayer)).
    pub const NOT_FOUND: Self = Self::new("not-found", "Not found");
    /// 405: the route exists, but not for the request's method.
    pub const METHOD_NOT_ALLOWED: Self = Self::new("method-not-allowed", "Method not allowed");
    /// 415: a body without the `Content-Type` the handler reads (an axum
    /// rejection, [mapped](crate::observe::ObserveLayer::problems_for_rejections)).
    pub const UNSUPPORTED_MEDIA_TYPE: Self =
        Self::new("unsupported-media-type", "Unsupported media type");

    /// Every problem type of this crate.
    pub const ALL: [Self; 16] = [
        Self::PAYLOAD_TOO_LARGE,
        Self::UNSUPPORTED_ENCODING,
        Self::MALFORMED_BODY,
        Self::HEADERS_TOO_LARGE,
        Self::URI_TOO_LONG,
        Self::REQUEST_TIMEOUT,
        Self::DEADLINE_EXCEEDED,
        Self::QUOTA_EXCEEDED,
        Self::INVALID_INPUT,
        Self::INTERNAL_ERROR,
        Self::SERVICE_UNAVAILABLE,
        Self::OVERLOADED,
        Self::TOO_MANY_IN_FLIGHT,
        Self::NOT_FOUND,
        Self::METHOD_NOT_ALLOWED,
        Self::UNSUPPORTED_MEDIA_TYPE,
    ];

    const fn new(slug: &'static str, title: &'static str) -> Self {
        Self { slug, title }
    }

    /// The fragment of the `type` URI.
    pub const fn slug(self) -> &'static str {
        self.slug
    }

    /// The `title` of every problem of this type.
    pub const fn title(self) -> &'static str {
        self.title
    }

    /// The whole `type` URI, under the [type base](super::type_base) in
    /// force.
    pub fn uri(self) -> String {
        match super::type_base() {
            super::ABOUT_BLANK => super::ABOUT_BLANK.to_owned(),
            base => format!("{base}{}", self.slug),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ProblemType;

    /// Every type's URI resolves: the error module's table has its anchor,
    /// and no anchor is left without a type.
    #[test]
    fn every_type_has_an_anchor_in_the_documented_table() {
        let docs = include_str!("mod.rs");
        for kind in ProblemType::ALL {
            let anchor = format!("<span id=\"{}\">`{}`</span>", kind.slug(), kind.slug());
            assert!(docs.contains(&anchor), "{} has no anchor", kind.slug());
        }
        assert_eq!(
            docs.matches("<span id=\"").count(),
            ProblemType::ALL.len(),
            "an anchor names no problem type"
        );
        let mut slugs: Vec<_> = ProblemType::ALL.iter().map(|kind| kind.slug()).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), ProblemType::ALL.len());
    }

    /// The crate's own code names its problem types through this list only:
    /// no production code outside `Problem` itself builds one from a slug.
    #[test]
    fn crate_code_builds_problems_from_the_list() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![src];
        let mut read = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.ends_with("error/problem.rs") || path.ends_with("error/problem_type.rs") {
                    continue;
                }
                let source = std::fs::read_to_string(&path).unwrap();
                let code = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
                assert!(!code.contains("Problem::new("), "{}", path.display());
                read += 1;
            }
        }
        assert!(read > 20, "only {read} files read");
    }
}
