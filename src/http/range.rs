//! HTTP byte ranges and conditional requests (RFC 9110) for one file: single ranges only
//! (a multi-range request gets the whole file), `If-Range`, `If-None-Match`,
//! `If-Modified-Since`.
//!
//! `If-None-Match` and `If-Modified-Since` are decoded and compared by the `headers` crate.
//! `Range` and `If-Range` are not: `headers::Range` drops a suffix range longer than the
//! file (`bytes=-5000` of 1,000 bytes), which RFC 9110 §14.1.2 serves as the whole file, and
//! `headers::IfRange` lets a range through for any date later than `Last-Modified`, where
//! §13.1.5 wants the exact date. The tests below hold both.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use headers::{HeaderMap, HeaderMapExt, IfModifiedSince, IfNoneMatch};

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// The whole file (no Range, or one we ignore).
    All,
    /// Inclusive byte positions.
    Part { start: u64, end: u64 },
    /// Nothing the file can give: 416.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-`, `bytes=-n`. Anything else (other units, several ranges,
/// bad syntax) is ignored, as RFC 9110 allows.
pub fn parse_range(header: Option<&str>, len: u64) -> Wanted {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Wanted::All;
    };
    if spec.contains(',') {
        return Wanted::All;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Wanted::All;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        // Suffix: the last n bytes.
        (true, false) => match num(b) {
            Some(0) => Wanted::Unsatisfiable,
            Some(_) if len == 0 => Wanted::Unsatisfiable,
            Some(n) => Wanted::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => Wanted::All,
        },
        (false, true) => match num(a) {
            Some(s) if s < len => Wanted::Part {
                start: s,
                end: len - 1,
            },
            Some(_) => Wanted::Unsatisfiable,
            None => Wanted::All,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(s), Some(e)) if s <= e => {
                if s >= len {
                    Wanted::Unsatisfiable
                } else {
                    Wanted::Part {
                        start: s,
                        end: e.min(len - 1),
                    }
                }
            }
            _ => Wanted::All,
        },
        (true, true) => Wanted::All,
    }
}

/// `Last-Modified` precision: whole seconds.
fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn http_date(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds(t))
}

/// The `Last-Modified` value of `modified`.
pub fn last_modified(modified: SystemTime) -> String {
    httpdate::fmt_http_date(http_date(modified))
}

/// `If-None-Match` (weak comparison) or, without it, `If-Modified-Since`: true means 304.
/// An unreadable header is ignored.
pub fn not_modified(headers: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    if headers.contains_key(hyper::header::IF_NONE_MATCH) {
        let Ok(tag) = etag.parse::<headers::ETag>() else {
            return false;
        };
        return headers
            .typed_get::<IfNoneMatch>()
            .is_some_and(|inm| !inm.precondition_passes(&tag));
    }
    headers
        .typed_get::<IfModifiedSince>()
        .is_some_and(|since| !since.is_modified(http_date(modified)))
}

/// `If-Range`: the range applies only if the client's copy is this version (strong ETag
/// match, or exactly this Last-Modified date).
pub fn if_range_allows(if_range: Option<&str>, etag: &str, modified: SystemTime) -> bool {
    let Some(v) = if_range.map(str::trim) else {
        return true;
    };
    if v.starts_with('"') || v.starts_with("W/") {
        return !v.starts_with("W/") && v == etag;
    }
    httpdate::parse_http_date(v).is_ok_and(|d| seconds(d) == seconds(modified))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let len = 1000;
        assert_eq!(parse_range(None, len), Wanted::All);
        assert_eq!(
            parse_range(Some("bytes=0-99"), len),
            Wanted::Part { start: 0, end: 99 }
        );
        assert_eq!(
            parse_range(Some("bytes=500-"), len),
            Wanted::Part {
                start: 500,
                end: 999
            }
        );
        assert_eq!(
            parse_range(Some("bytes=-100"), len),
            Wanted::Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            parse_range(Some("bytes=-5000"), len),
            Wanted::Part { start: 0, end: 999 }
        );
        assert_eq!(
            parse_range(Some("bytes=990-5000"), len),
            Wanted::Part {
                start: 990,
                end: 999
            }
        );
        assert_eq!(parse_range(Some("bytes=1000-"), len), Wanted::Unsatisfiable);
        assert_eq!(
            parse_range(Some("bytes=1000-1001"), len),
            Wanted::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=-0"), len), Wanted::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-1"), len), Wanted::All);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), len), Wanted::All);
        assert_eq!(parse_range(Some("items=0-1"), len), Wanted::All);
        assert_eq!(parse_range(Some("bytes=x-1"), len), Wanted::All);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
    }

    fn conditional(inm: Option<&str>, ims: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = inm {
            h.insert(hyper::header::IF_NONE_MATCH, v.parse().unwrap());
        }
        if let Some(v) = ims {
            h.insert(hyper::header::IF_MODIFIED_SINCE, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn conditionals() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_651_200_500);
        let etag = "\"abc\"";
        let not_modified =
            |inm: Option<&str>, ims: Option<&str>| not_modified(&conditional(inm, ims), etag, t);
        assert!(not_modified(Some("\"x\", \"abc\""), None));
        assert!(not_modified(Some("W/\"abc\""), None));
        assert!(not_modified(Some("*"), None));
        // If-None-Match wins over the date.
        assert!(!not_modified(Some("\"x\""), Some(&last_modified(t))));
        assert!(not_modified(None, Some(&last_modified(t))));
        assert!(not_modified(
            None,
            Some(&last_modified(t + Duration::from_secs(5)))
        ));
        assert!(!not_modified(
            None,
            Some(&last_modified(t - Duration::from_secs(5)))
        ));
        assert!(
            !not_modified(None, Some("yesterday")),
            "unreadable: ignored"
        );
        assert!(if_range_allows(None, etag, t));
        assert!(if_range_allows(Some("\"abc\""), etag, t));
        assert!(!if_range_allows(Some("\"old\""), etag, t));
        assert!(!if_range_allows(Some("W/\"abc\""), etag, t));
        assert!(if_range_allows(Some(&last_modified(t)), etag, t));
        assert!(!if_range_allows(
            Some(&last_modified(t - Duration::from_secs(1))),
            etag,
            t
        ));
    }
}
