//! The shim's memory of recent terminal output, addressed by byte offset since the shell
//! started, so a viewer that reconnects can ask for exactly what it missed.

use std::collections::VecDeque;

/// A bounded buffer of the newest output bytes.
#[derive(Debug)]
pub struct OutputRing {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// Offset of the byte after the newest one: total bytes ever written.
    end: u64,
}

impl OutputRing {
    /// A ring that keeps the last `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            bytes: VecDeque::with_capacity(capacity.min(64 * 1024)),
            capacity,
            end: 0,
        }
    }

    /// Appends output, dropping the oldest bytes past the capacity.
    pub fn push(&mut self, data: &[u8]) {
        self.end += data.len() as u64;
        let data = &data[data.len().saturating_sub(self.capacity)..];
        let overflow = (self.bytes.len() + data.len()).saturating_sub(self.capacity);
        self.bytes.drain(..overflow);
        self.bytes.extend(data);
    }

    /// Offset of the oldest byte still held.
    pub fn start(&self) -> u64 {
        self.end - self.bytes.len() as u64
    }

    /// Offset just past the newest byte.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The bytes from `from` to the end, and the offset they actually start at (later than
    /// `from` when the ring no longer holds that far back).
    pub fn since(&self, from: u64) -> (u64, Vec<u8>) {
        let start = from.clamp(self.start(), self.end);
        let skip = (start - self.start()) as usize;
        (start, self.bytes.range(skip..).copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes_with_their_offsets() {
        let mut ring = OutputRing::new(8);
        ring.push(b"hello ");
        assert_eq!(ring.since(0), (0, b"hello ".to_vec()));
        ring.push(b"world");
        assert_eq!((ring.start(), ring.end()), (3, 11));
        assert_eq!(ring.since(0), (3, b"lo world".to_vec()));
        assert_eq!(ring.since(6), (6, b"world".to_vec()));
        assert_eq!(ring.since(11), (11, vec![]));
        assert_eq!(ring.since(99), (11, vec![]));
    }

    #[test]
    fn a_write_larger_than_the_ring_keeps_its_tail() {
        let mut ring = OutputRing::new(4);
        ring.push(b"abcdefgh");
        assert_eq!(ring.since(0), (4, b"efgh".to_vec()));
        ring.push(b"");
        assert_eq!(ring.end(), 8);
    }
}
