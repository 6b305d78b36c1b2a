//! One value per driver stream, for what a schedule keeps per stream (a
//! CUDA graph exec: the driver orders every launch of one exec after the
//! one before, whatever the stream). Bounded: the least recently used
//! stream's value goes when a new stream needs room. Streams are keyed by
//! their raw handle; a handle reused by a later stream only inherits a
//! value that was valid for any stream.

/// Graph execs a schedule step keeps, one per stream; the least recently
/// used one goes (the drivers free an exec still in flight once its launch
/// completes).
pub const EXECS_PER_GRAPH: usize = 16;
/// The key of the exec made at encode time until a stream takes it
/// (`claim`).
pub const UNCLAIMED: usize = 0;

/// At most `cap` (stream, value) pairs, least recently used first.
pub struct PerStream<V> {
    entries: Vec<(usize, V)>,
    cap: usize,
}

impl<V> PerStream<V> {
    pub fn new(cap: usize) -> Self {
        PerStream {
            entries: Vec::new(),
            cap: cap.max(1),
        }
    }

    /// The value of `stream`, now the most recently used.
    pub fn get(&mut self, stream: usize) -> Option<&mut V> {
        let at = self.entries.iter().position(|(s, _)| *s == stream)?;
        let entry = self.entries.remove(at);
        self.entries.push(entry);
        self.entries.last_mut().map(|(_, v)| v)
    }

    /// Sets the value of `stream` (not present), dropping the least
    /// recently used one when full.
    pub fn insert(&mut self, stream: usize, value: V) -> &mut V {
        if self.entries.len() >= self.cap {
            self.entries.remove(0);
        }
        self.entries.push((stream, value));
        let last = self.entries.len() - 1;
        &mut self.entries[last].1
    }

    /// The value of `stream`, else the `UNCLAIMED` one (made before any
    /// stream ran), which is `stream`'s from now on.
    pub fn claim(&mut self, stream: usize) -> Option<&mut V> {
        let key = match self.entries.iter().any(|(s, _)| *s == stream) {
            true => stream,
            false => UNCLAIMED,
        };
        let at = self.entries.iter().position(|(s, _)| *s == key)?;
        self.entries[at].0 = stream;
        self.get(stream)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::{PerStream, UNCLAIMED};

    #[test]
    fn keeps_one_value_per_stream_and_drops_the_least_recently_used() {
        let mut m = PerStream::new(2);
        m.insert(1, "a");
        m.insert(2, "b");
        assert_eq!(m.get(1).copied(), Some("a")); // 1 is now the newest
        m.insert(3, "c"); // 2 goes
        assert_eq!(m.get(2), None);
        assert_eq!(m.get(1).copied(), Some("a"));
        assert_eq!(m.get(3).copied(), Some("c"));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn the_unclaimed_value_goes_to_the_first_stream() {
        let mut m = PerStream::new(4);
        m.insert(UNCLAIMED, 10);
        assert_eq!(m.claim(7).copied(), Some(10));
        assert_eq!(m.get(UNCLAIMED), None);
        assert_eq!(m.claim(8), None);
        assert_eq!(m.claim(7).copied(), Some(10));
        m.insert(8, 20);
        assert_eq!(m.claim(8).copied(), Some(20));
    }

    #[test]
    fn a_capacity_of_zero_still_keeps_one() {
        let mut m = PerStream::new(0);
        m.insert(1, ());
        m.insert(2, ());
        assert_eq!(m.len(), 1);
        assert!(m.get(2).is_some());
    }
}
