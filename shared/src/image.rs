//! OCI image references and digests.
//!
//! Grammar from the distribution project's reference syntax, restricted to what fogshell
//! accepts: `[registry/]repository[:tag][@sha256:<64 hex>]`. Parsing accepts tags so that the
//! admission policy, not a parse error, refuses an unpinned image (with its own rule id).

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A SHA-256 content digest, written `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Digest([u8; 32]);

impl Digest {
    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hex part alone (as cosign names its `sha256-<hex>.sig` tags).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Digest {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = s
            .strip_prefix("sha256:")
            .ok_or(ImageRefError::UnsupportedDigest)?;
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(ImageRefError::BadDigest);
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| ImageRefError::BadDigest)?;
        Ok(Self(bytes))
    }
}

impl TryFrom<String> for Digest {
    type Error = ImageRefError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Digest> for String {
    fn from(value: Digest) -> Self {
        value.to_string()
    }
}

/// Why an image reference was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ImageRefError {
    /// Empty, or over 255 bytes for the name.
    #[error("image reference is empty or too long")]
    BadLength,
    /// A repository path component breaks the grammar (lowercase letters, digits, separators).
    #[error("invalid repository name in image reference")]
    BadRepository,
    /// The registry host part is malformed.
    #[error("invalid registry host in image reference")]
    BadRegistry,
    /// The tag breaks the grammar (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
    #[error("invalid tag in image reference")]
    BadTag,
    /// The digest algorithm is not sha256.
    #[error("only sha256 digests are supported")]
    UnsupportedDigest,
    /// The digest is not 64 lowercase hex digits.
    #[error("digest must be sha256: followed by 64 lowercase hex digits")]
    BadDigest,
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef {
    registry: Option<String>,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// The longest name (registry and repository) the distribution grammar allows.
const MAX_NAME_LEN: usize = 255;

impl ImageRef {
    /// The registry host (with port), if the reference names one.
    pub fn registry(&self) -> Option<&str> {
        self.registry.as_deref()
    }

    /// The repository path (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference is pinned.
    pub fn digest(&self) -> Option<Digest> {
        self.digest
    }

    /// Pinned references name their content by digest; production runs nothing else.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// Builds a pinned reference (`registry/repository@digest`).
    pub fn pinned(
        registry: Option<&str>,
        repository: &str,
        digest: Digest,
    ) -> Result<Self, ImageRefError> {
        let name = match registry {
            Some(r) => format!("{r}/{repository}@{digest}"),
            None => format!("{repository}@{digest}"),
        };
        name.parse()
    }
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// A repository path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: one '.', one or two '_', or any number of '-'.
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A registry host: DNS labels separated by dots (or `localhost`), optional `:port`.
fn valid_registry(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if let Some(p) = port
        && (p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u32>().map_or(true, |n| n > 65535))
    {
        return false;
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

impl std::str::FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(ImageRefError::BadLength);
        }
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(ImageRefError::BadTag);
        }
        // The first component is a registry when it looks like a host (as `docker pull` decides).
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_registry(first) {
                    return Err(ImageRefError::BadRegistry);
                }
                (Some(first), path)
            }
            _ => (None, name),
        };
        if !repository.split('/').all(valid_path_component) {
            return Err(ImageRefError::BadRepository);
        }
        Ok(Self {
            registry: registry.map(str::to_owned),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        f.write_str(&self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for ImageRef {
    type Error = ImageRefError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<ImageRef> for String {
    fn from(value: ImageRef) -> Self {
        value.to_string()
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for ImageRef {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let registry = *u.choose(&[None, Some("127.0.0.1:5000"), Some("registry.example.org")])?;
        let repository = *u.choose(&["busybox", "fogshell/shell", "a/b-c/d_e.f"])?;
        let tag = *u.choose(&[None, Some("latest"), Some("v1.2.3")])?;
        let digest: Option<Digest> = u.arbitrary()?;
        let mut text = registry.map(|r| format!("{r}/")).unwrap_or_default();
        text.push_str(repository);
        if let Some(t) = tag {
            text.push(':');
            text.push_str(t);
        }
        if let Some(d) = digest {
            text.push_str(&format!("@{d}"));
        }
        Ok(text.parse().expect("generated references are valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pinned_references_parse() {
        let r: ImageRef = format!("127.0.0.1:5000/fogshell/shell@sha256:{HEX}")
            .parse()
            .unwrap();
        assert_eq!(r.registry(), Some("127.0.0.1:5000"));
        assert_eq!(r.repository(), "fogshell/shell");
        assert_eq!(r.tag(), None);
        assert!(r.is_pinned());
        assert_eq!(r.digest().unwrap().hex(), HEX);
        assert_eq!(
            r.to_string(),
            format!("127.0.0.1:5000/fogshell/shell@sha256:{HEX}")
        );
    }

    #[test]
    fn tags_parse_but_are_not_pinned() {
        let r: ImageRef = "busybox:latest".parse().unwrap();
        assert_eq!(r.registry(), None);
        assert_eq!(r.tag(), Some("latest"));
        assert!(!r.is_pinned());
        let r: ImageRef = "localhost:5000/busybox".parse().unwrap();
        assert_eq!(r.registry(), Some("localhost:5000"));
        assert_eq!(r.tag(), None);
        let both: ImageRef = format!("busybox:1.36@sha256:{HEX}").parse().unwrap();
        assert!(both.is_pinned());
        assert_eq!(both.tag(), Some("1.36"));
    }

    #[test]
    fn malformed_references_are_refused_with_a_reason() {
        use ImageRefError::*;
        let cases: &[(&str, ImageRefError)] = &[
            ("", BadLength),
            ("Busybox", BadRepository),
            ("busy//box", BadRepository),
            ("busybox:", BadTag),
            ("busybox:-x", BadTag),
            ("bad_host.:5000/x", BadRegistry),
            ("host.example:99999/x", BadRegistry),
            ("busybox@md5:abc", UnsupportedDigest),
            ("busybox@sha256:abc", BadDigest),
            ("a..b", BadRepository),
            ("a___b", BadRepository),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<ImageRef>().unwrap_err(), *want, "{text:?}");
        }
        let upper = format!("busybox@sha256:{}", HEX.to_uppercase());
        assert_eq!(upper.parse::<ImageRef>().unwrap_err(), BadDigest);
        assert_eq!("x".repeat(256).parse::<ImageRef>().unwrap_err(), BadLength);
    }

    #[test]
    fn separators_follow_the_distribution_grammar() {
        for ok in ["a.b", "a_b", "a__b", "a-b", "a---b", "x/y.z/w"] {
            assert!(ok.parse::<ImageRef>().is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn digests_serialize_as_strings() {
        let d: Digest = format!("sha256:{HEX}").parse().unwrap();
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            format!("\"sha256:{HEX}\"")
        );
        let back: Digest = serde_json::from_str(&format!("\"sha256:{HEX}\"")).unwrap();
        assert_eq!(back, d);
    }
}
