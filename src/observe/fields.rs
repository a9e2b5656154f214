//! What the span and the outcome event both write: the `tracing` target,
//! and request fields reduced to bounded, label-safe values.

use std::net::SocketAddr;

use http::Method;

/// The `tracing` target of the span and the outcome event.
pub const TARGET: &str = "tower_harden::observe";

/// The method as OpenTelemetry names it: one of the known methods, or
/// `_OTHER`, so a client cannot mint new label values.
pub(crate) fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

pub(crate) fn client_address(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
    crate::context::peer_addr(extensions)
        .or_else(|| extensions.get::<SocketAddr>().copied())
        .map(|addr| addr.ip())
}

/// `ip.to_string()`, with IPv4 (the common case) written by hand: the
/// formatting machinery showed in the profile of a logged request.
pub(crate) fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (index, octet) in v4.octets().into_iter().enumerate() {
        if index > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// The route template axum matched, kept by reference count until the
/// outcome event.
#[derive(Debug, Clone)]
pub(crate) struct RouteTemplate {
    #[cfg(feature = "axum")]
    matched: Option<axum::extract::MatchedPath>,
    /// What a [route classifier](super::ObserveLayer::route_classifier)
    /// said, when axum matched nothing.
    pub(crate) classified: Option<std::borrow::Cow<'static, str>>,
}

impl RouteTemplate {
    pub(crate) fn of(extensions: &http::Extensions) -> Self {
        let _ = extensions;
        Self {
            #[cfg(feature = "axum")]
            matched: extensions.get::<axum::extract::MatchedPath>().cloned(),
            classified: None,
        }
    }

    /// Whether axum matched a route.
    pub(crate) fn is_matched(&self) -> bool {
        #[cfg(feature = "axum")]
        if self.matched.is_some() {
            return true;
        }
        false
    }

    /// The template, or `_unmatched`.
    pub(crate) fn as_str(&self) -> &str {
        #[cfg(feature = "axum")]
        if let Some(matched) = &self.matched {
            return matched.as_str();
        }
        self.classified.as_deref().unwrap_or("_unmatched")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_display() {
        use std::net::{IpAddr, Ipv4Addr};
        for a in [0u8, 1, 9, 10, 42, 99, 100, 109, 110, 199, 200, 255] {
            for b in [0u8, 7, 10, 100, 255] {
                let ip = IpAddr::V4(Ipv4Addr::new(a, b, 255 - a, b / 3));
                assert_eq!(ip_text(ip), ip.to_string());
            }
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_text(v6), "2001:db8::1");
        let mapped: IpAddr = "::ffff:1.2.3.4".parse().unwrap();
        assert_eq!(ip_text(mapped), mapped.to_string());
    }
}
