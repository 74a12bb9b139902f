//! Owns read-your-writes over HTTP: the `X-Ha-Seq` header a write's answer carries (its
//! commit's stream sequence) and how a request asks to see at least a sequence first
//! (`X-Ha-Min-Seq` / `?min_seq=`, waiting at most `X-Ha-Min-Seq-Timeout-Ms` /
//! `?min_seq_timeout=`, default 5 s).
//! Must not wait itself: `exec::Executor::wait_applied` does; this only reads the request.
//! Invariant: a malformed value is a 400 naming it, never ignored.

use std::time::Duration;

use axum::http::HeaderMap;

use crate::exec::Seq;

/// The answer header with the commit's stream sequence (writes on a replicated node).
pub const SEQ_HEADER: &str = "x-ha-seq";
/// The request header asking to see at least this sequence.
pub const MIN_SEQ_HEADER: &str = "x-ha-min-seq";
/// The request header bounding that wait, in milliseconds.
pub const MIN_SEQ_TIMEOUT_HEADER: &str = "x-ha-min-seq-timeout-ms";
/// How long a read waits for its sequence unless it says otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// What a request asked to see before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinSeq {
    pub seq: Seq,
    pub wait: Duration,
}

/// The value of `name` in a query string (`a=1&b=2`).
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
    })
}

/// A duration with a unit (`500ms`, `2s`) or a number of milliseconds.
pub fn parse_duration(name: &str, value: &str) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => humantime::parse_duration(value),
    }
    .map_err(|e| format!("{name}={value}: {e}; write e.g. {name}=500ms or {name}=2s"))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, String> {
    headers
        .get(name)
        .map(|v| v.to_str().map_err(|_| format!("{name}: not text")))
        .transpose()
}

/// The request's "at least sequence N", if it asked (header first, then the query); the wait
/// is at most `max` (the server's `--query-timeout`).
pub fn min_seq(
    headers: &HeaderMap,
    query: Option<&str>,
    max: Option<Duration>,
) -> Result<Option<MinSeq>, String> {
    let Some(raw) = header(headers, MIN_SEQ_HEADER)?.or(query_param(query, "min_seq")) else {
        return Ok(None);
    };
    let seq = raw.trim().parse::<u64>().map_err(|_| {
        format!("min_seq {raw:?}: not a stream sequence (a whole number, as in X-Ha-Seq)")
    })?;
    let wait = match header(headers, MIN_SEQ_TIMEOUT_HEADER)? {
        Some(ms) => Duration::from_millis(ms.trim().parse::<u64>().map_err(|_| {
            format!("{MIN_SEQ_TIMEOUT_HEADER} {ms:?}: not a number of milliseconds")
        })?),
        None => match query_param(query, "min_seq_timeout") {
            Some(v) => parse_duration("min_seq_timeout", v)?,
            None => DEFAULT_WAIT,
        },
    };
    let wait = max.map_or(wait, |m| wait.min(m));
    Ok(Some(MinSeq {
        seq: Seq(seq),
        wait,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_sequence_is_asked_by_header_or_query_and_bounded() {
        let none = headers(&[]);
        assert_eq!(min_seq(&none, Some("timeout=1s"), None), Ok(None));
        assert_eq!(
            min_seq(&headers(&[("x-ha-min-seq", "42")]), None, None),
            Ok(Some(MinSeq {
                seq: Seq(42),
                wait: DEFAULT_WAIT
            }))
        );
        assert_eq!(
            min_seq(&none, Some("min_seq=7&min_seq_timeout=250ms"), None),
            Ok(Some(MinSeq {
                seq: Seq(7),
                wait: Duration::from_millis(250)
            }))
        );
        let h = headers(&[("x-ha-min-seq", "7"), ("x-ha-min-seq-timeout-ms", "90000")]);
        assert_eq!(
            min_seq(&h, None, Some(Duration::from_secs(60)))
                .unwrap()
                .unwrap()
                .wait,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn malformed_values_are_named() {
        let e = min_seq(&headers(&[("x-ha-min-seq", "soon")]), None, None).unwrap_err();
        assert!(e.contains("soon"), "{e}");
        let e = min_seq(&headers(&[]), Some("min_seq=3&min_seq_timeout=x"), None).unwrap_err();
        assert!(e.contains("min_seq_timeout=x"), "{e}");
    }
}
