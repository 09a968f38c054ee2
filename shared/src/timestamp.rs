//! Points in time, as both sides write them.
//!
//! Stored as whole milliseconds since the Unix epoch (UTC). Human-readable formats (the JSON API,
//! the audit log's canonical form) see RFC 3339 with exactly three fractional digits and `Z`, so
//! one instant always has one spelling; compact formats (postcard on the wire) see the integer.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// An instant with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Timestamp(UnixMillis);

/// Milliseconds since 1970-01-01T00:00:00Z, bounded to years 0000..=9999 so every value has an
/// RFC 3339 spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct UnixMillis(i64);

/// The earliest and latest instants RFC 3339 can write (0000-01-01 and 9999-12-31T23:59:59.999Z).
const MIN_MILLIS: i64 = -62_167_219_200_000;
const MAX_MILLIS: i64 = 253_402_300_799_999;

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for UnixMillis {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self(u.int_in_range(MIN_MILLIS..=MAX_MILLIS)?))
    }
}

/// Why a time could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Outside the years 0000..=9999.
    #[error("timestamp out of range")]
    OutOfRange,
    /// Not RFC 3339.
    #[error("not an RFC 3339 timestamp")]
    NotRfc3339,
}

impl Timestamp {
    /// The Unix epoch.
    pub const UNIX_EPOCH: Self = Self(UnixMillis(0));

    /// From milliseconds since the Unix epoch.
    pub fn from_unix_millis(millis: i64) -> Result<Self, TimestampError> {
        if (MIN_MILLIS..=MAX_MILLIS).contains(&millis) {
            Ok(Self(UnixMillis(millis)))
        } else {
            Err(TimestampError::OutOfRange)
        }
    }

    /// From milliseconds since the Unix epoch, clamped into the range a timestamp holds.
    fn clamped(millis: i128) -> Self {
        let millis = millis.clamp(i128::from(MIN_MILLIS), i128::from(MAX_MILLIS));
        Self(UnixMillis(i64::try_from(millis).unwrap_or(0)))
    }

    /// `at`, to the millisecond (clamped to years 0000–9999): the one way the binaries turn
    /// their wall clock into a timestamp.
    pub fn from_system_time(at: std::time::SystemTime) -> Self {
        Self::clamped(match at.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => i128::try_from(after.as_millis()).unwrap_or(i128::MAX),
            Err(before) => -i128::try_from(before.duration().as_millis()).unwrap_or(i128::MAX),
        })
    }

    /// `at`, to the millisecond (clamped to years 0000–9999).
    pub fn from_offset_date_time(at: OffsetDateTime) -> Self {
        Self::clamped(at.unix_timestamp_nanos().div_euclid(1_000_000))
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i64 {
        self.0.0
    }

    /// Parses RFC 3339 (any offset, any precision; sub-millisecond digits are dropped).
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| TimestampError::NotRfc3339)?;
        let millis = at.unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(millis)
            .map_err(|_| TimestampError::OutOfRange)
            .and_then(Self::from_unix_millis)
    }

    /// This instant plus `seconds`, or `None` past year 9999.
    pub fn plus_seconds(self, seconds: u32) -> Option<Self> {
        self.unix_millis()
            .checked_add(i64::from(seconds) * 1000)
            .and_then(|m| Self::from_unix_millis(m).ok())
    }

    fn to_offset_date_time(self) -> OffsetDateTime {
        // In range by construction, so this cannot fail.
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.unix_millis()) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Display for Timestamp {
    /// `2026-11-25T18:18:50.123Z`: always UTC, always three fractional digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let text = self
            .to_offset_date_time()
            .format(&format)
            .map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_rfc3339(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_i64(self.unix_millis())
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            Self::parse_rfc3339(&text).map_err(de::Error::custom)
        } else {
            let millis = i64::deserialize(deserializer)?;
            Self::from_unix_millis(millis).map_err(de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_convert_to_the_millisecond_and_clamp() {
        use std::time::{Duration, UNIX_EPOCH};
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(
            Timestamp::from_system_time(at).unix_millis(),
            1_700_000_000_123
        );
        assert_eq!(
            Timestamp::from_system_time(UNIX_EPOCH - Duration::from_millis(5)).unix_millis(),
            -5
        );
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(Timestamp::from_system_time(far).unix_millis(), MAX_MILLIS);
        let odt = OffsetDateTime::from_unix_timestamp_nanos(1_500_000_999_999).unwrap();
        assert_eq!(
            Timestamp::from_offset_date_time(odt).unix_millis(),
            1_500_000
        );
    }

    #[test]
    fn one_instant_has_one_spelling() {
        let t = Timestamp::from_unix_millis(1_795_544_330_123).unwrap();
        assert_eq!(t.to_string(), "2026-11-24T18:18:50.123Z");
        let same = Timestamp::parse_rfc3339("2026-11-24T19:18:50.123456+01:00").unwrap();
        assert_eq!(same, t);
        assert_eq!(
            Timestamp::UNIX_EPOCH.to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn extremes_round_trip() {
        for millis in [MIN_MILLIS, -1, 0, MAX_MILLIS] {
            let t = Timestamp::from_unix_millis(millis).unwrap();
            assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }
        assert!(Timestamp::from_unix_millis(MAX_MILLIS + 1).is_err());
        assert!(Timestamp::from_unix_millis(i64::MIN).is_err());
    }

    #[test]
    fn json_is_a_string_and_postcard_an_integer() {
        let t = Timestamp::from_unix_millis(1500).unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"1970-01-01T00:00:01.500Z\""
        );
        let bytes = postcard::to_stdvec(&t).unwrap();
        assert_eq!(postcard::from_bytes::<Timestamp>(&bytes).unwrap(), t);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }

    #[test]
    fn adding_seconds_saturates_into_none() {
        let t = Timestamp::from_unix_millis(MAX_MILLIS - 500).unwrap();
        assert_eq!(t.plus_seconds(1), None);
        assert_eq!(
            Timestamp::UNIX_EPOCH
                .plus_seconds(60)
                .unwrap()
                .unix_millis(),
            60_000
        );
    }
}
