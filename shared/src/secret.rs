//! Secrets that must never reach a log or a trace.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A bearer credential (an attach token, a join token). Its `Debug` and `Display` print
/// `<redacted>`, so a `tracing` field or a `{:?}` of a struct that holds one cannot leak it;
/// the value is reachable only through [`Secret::expose`], which is easy to grep for.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for putting on the wire or checking a signature. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Secret {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self(u.arbitrary()?))
    }
}

/// Replaces the value of every `token=` query parameter in `text` with `<redacted>`, for URLs
/// that are about to be logged (the PTY attach URL carries its token in the query).
pub fn redact_query_tokens(text: &str) -> String {
    const KEY: &str = "token=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(KEY) {
        let starts_param = pos == 0 || matches!(rest.as_bytes()[pos - 1], b'?' | b'&' | b';');
        out.push_str(&rest[..pos + KEY.len()]);
        rest = &rest[pos + KEY.len()..];
        if starts_param {
            let end = rest.find(['&', ';', '#', ' ']).unwrap_or(rest.len());
            if end > 0 {
                out.push_str("<redacted>");
            }
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("eyJhbGciOi.secret.sig");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), "eyJhbGciOi.secret.sig");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Secret,
        }
        let shown = format!("{:?}", Holder { token: s });
        assert!(!shown.contains("secret.sig"), "{shown}");
    }

    #[test]
    fn serde_carries_the_value() {
        let s = Secret::new("abc");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"abc\"");
    }

    #[test]
    fn query_tokens_are_redacted() {
        assert_eq!(
            redact_query_tokens("/v1/sessions/x/pty?token=abc.def&cols=80"),
            "/v1/sessions/x/pty?token=<redacted>&cols=80"
        );
        assert_eq!(
            redact_query_tokens("GET /pty?a=1&token=zzz HTTP/1.1"),
            "GET /pty?a=1&token=<redacted> HTTP/1.1"
        );
        assert_eq!(redact_query_tokens("token=x"), "token=<redacted>");
        // `mytoken=` is another parameter: left alone.
        assert_eq!(redact_query_tokens("?mytoken=v"), "?mytoken=v");
        assert_eq!(redact_query_tokens("no secrets here"), "no secrets here");
        assert_eq!(redact_query_tokens("?token="), "?token=");
    }
}
