//! The configured region-to-region latency table: what placement assumes about reaching a
//! node's region from the client's when the client measured nothing itself.

use std::collections::BTreeMap;
use std::fmt;

use crate::ids::Region;

/// Round-trip times between regions, in milliseconds, symmetric. A region to itself is 0
/// unless configured otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyTable(BTreeMap<Region, BTreeMap<Region, u32>>);

/// A table entry that does not read as `REGION/REGION=MS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLatencyError(String);

impl fmt::Display for ParseLatencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseLatencyError {}

impl LatencyTable {
    /// An empty table: every region is 0 from itself and unknown from any other.
    pub const fn new() -> Self {
        Self(BTreeMap::new())
    }

    /// Sets the round trip between `a` and `b` (both ways).
    pub fn insert(&mut self, a: Region, b: Region, rtt_ms: u32) {
        self.0
            .entry(a.clone())
            .or_default()
            .insert(b.clone(), rtt_ms);
        self.0.entry(b).or_default().insert(a, rtt_ms);
    }

    /// Adds one entry written `REGION/REGION=MS` (`eu-west/us-east=85`), as the coordinator's
    /// `--region-latency` flag takes it.
    pub fn add_entry(&mut self, entry: &str) -> Result<(), ParseLatencyError> {
        let bad =
            |why: &str| ParseLatencyError(format!("{entry:?}: {why} (want REGION/REGION=MS)"));
        let (pair, ms) = entry.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let (a, b) = pair.split_once('/').ok_or_else(|| bad("no `/`"))?;
        let a: Region = a.trim().parse().map_err(|e| bad(&format!("{e}")))?;
        let b: Region = b.trim().parse().map_err(|e| bad(&format!("{e}")))?;
        let ms: u32 = ms
            .trim()
            .parse()
            .map_err(|_| bad("the latency is not a whole number of milliseconds"))?;
        self.insert(a, b, ms);
        Ok(())
    }

    /// The row of everything known from `from`, for looking up many nodes at once.
    pub fn from_region(&self, from: &Region) -> Option<&BTreeMap<Region, u32>> {
        self.0.get(from)
    }

    /// The round trip from `from` to `to`, when known.
    pub fn rtt_ms(&self, from: &Region, to: &Region) -> Option<u32> {
        match self.0.get(from).and_then(|row| row.get(to)) {
            Some(ms) => Some(*ms),
            None if from == to => Some(0),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(s: &str) -> Region {
        s.parse().unwrap()
    }

    #[test]
    fn entries_are_symmetric_and_a_region_is_near_itself() {
        let mut table = LatencyTable::default();
        table.add_entry("eu-west/us-east=85").unwrap();
        assert_eq!(
            table.rtt_ms(&region("us-east"), &region("eu-west")),
            Some(85)
        );
        assert_eq!(
            table.rtt_ms(&region("eu-west"), &region("eu-west")),
            Some(0)
        );
        assert_eq!(table.rtt_ms(&region("eu-west"), &region("ap-south")), None);
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        let mut table = LatencyTable::default();
        for (entry, why) in [
            ("eu-west=3", "no `/`"),
            ("eu-west/us-east", "no `=`"),
            ("eu-west/us-east=fast", "whole number"),
            ("eu-west/US East=3", "region"),
        ] {
            let error = table.add_entry(entry).unwrap_err().to_string();
            assert!(error.contains(why), "{entry}: {error}");
        }
    }
}
