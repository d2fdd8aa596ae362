//! Who may use the admin listener: with `admin.token` set, everything but the probes wants
//! it (`Authorization: Bearer`, or the console's sign-in cookie), compared in constant time;
//! and, token or not, a state-changing request from another site's page is refused (its
//! `Origin` or `Sec-Fetch-Site` says so), so a page an operator visits cannot retry
//! webhooks or play calls through the operator's browser.

use warp::http::{HeaderMap, StatusCode, header};

use crate::config::Secret;
use crate::http::reply::ApiError;

/// The cookie the sign-in page sets.
pub const COOKIE: &str = "finaz_admin";

/// How requests to the admin listener are let in.
#[derive(Clone, Debug)]
pub struct Access {
    token: Option<Secret>,
}

impl Access {
    pub fn new(token: Option<Secret>) -> Self {
        Access { token }
    }

    /// Whether a token is asked for at all.
    pub fn required(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `given` is the token.
    pub fn accepts(&self, given: &str) -> bool {
        self.token.as_ref().is_some_and(|t| {
            subtle::ConstantTimeEq::ct_eq(t.expose().as_bytes(), given.as_bytes()).into()
        })
    }

    /// Lets the request in, or says why not (401; 403 for a foreign `Host`).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if !self.required() {
            // Without a token only loopback serves: a page whose domain an attacker points
            // at 127.0.0.1 (DNS rebinding) still names its own host, and is refused.
            return loopback_host(headers);
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = cookie(headers, COOKIE);
        if bearer
            .or(cookie.as_deref())
            .is_some_and(|t| self.accepts(t))
        {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "admin_token_required",
                "send admin.token as `Authorization: Bearer <token>`, or sign in at /login",
            ))
        }
    }

    /// `Set-Cookie` for a signed-in browser: only sent back to this listener, never to
    /// scripts, never with requests other sites start.
    pub fn cookie_for(&self, token: &str) -> String {
        format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
    }
}

/// Refuses a state-changing request another site's page started (403).
pub fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refuse = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "this request came from another site's page; use the console itself",
        )
    };
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &warp::http::HeaderValue| v.to_str().ok())
    };
    if text("sec-fetch-site").is_some_and(|s| s == "cross-site" || s == "same-site") {
        return Err(refuse());
    }
    match (text("origin"), text("host")) {
        // Not a browser's cross-origin request (curl, Prometheus, the CLI).
        (None, _) => Ok(()),
        (Some(origin), Some(host))
            if origin
                .strip_prefix("http://")
                .or(origin.strip_prefix("https://"))
                == Some(host) =>
        {
            Ok(())
        }
        _ => Err(refuse()),
    }
}

/// The request names this machine by a loopback name (`127.0.0.1`, `[::1]`, `localhost`).
fn loopback_host(headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback || host.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            format!(
                "{host:?} is not a loopback name: without admin.token the admin listener answers only to 127.0.0.1, [::1] or localhost"
            ),
        ))
    }
}

/// The value of cookie `name`.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_token_comes_as_bearer_or_cookie() {
        let a = Access::new(Some(Secret::new("0123456789abcdef")));
        assert!(a.check(&headers(&[])).is_err());
        assert!(
            a.check(&headers(&[("authorization", "Bearer 0123456789abcdef")]))
                .is_ok()
        );
        assert!(
            a.check(&headers(&[("authorization", "Bearer 0123456789abcdeX")]))
                .is_err()
        );
        assert!(
            a.check(&headers(&[("cookie", "x=1; finaz_admin=0123456789abcdef")]))
                .is_ok()
        );
        assert!(a.check(&headers(&[("cookie", "finaz_admin=")])).is_err());
        assert!(
            Access::new(None).check(&headers(&[])).is_ok(),
            "no token, no check"
        );
    }

    #[test]
    fn only_the_console_itself_may_change_things() {
        let ok = |pairs: &[(&'static str, &str)]| same_origin(&headers(pairs)).is_ok();
        assert!(ok(&[]), "curl");
        assert!(ok(&[
            ("origin", "http://127.0.0.1:9090"),
            ("host", "127.0.0.1:9090")
        ]));
        assert!(!ok(&[
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:9090")
        ]));
        assert!(!ok(&[("origin", "null"), ("host", "127.0.0.1:9090")]));
        assert!(!ok(&[("sec-fetch-site", "cross-site")]));
        assert!(ok(&[("sec-fetch-site", "same-origin")]));
    }
}
