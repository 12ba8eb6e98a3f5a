//! The address allocator of one pool: which offsets (of its usable range)
//! are taken, and which free one to hand out next.
//!
//! * Ranges of up to 2^24 addresses use a bitmap of `u64` words, scanned a
//!   word at a time (a /8 costs 2 MiB).
//! * Bigger ranges (an IPv6 /64) use a sparse ordered set of taken offsets.
//!
//! Reuse policy ([`Policy`]): first-free hands out the lowest free offset
//! (a released address comes back first); serial hands out the next free
//! offset after the last one handed out, wrapping at the end of the range,
//! so a released address is reused as late as possible.

use std::collections::BTreeSet;
use std::fmt;

/// Ranges up to this many addresses get a bitmap.
const BITMAP_LIMIT: u128 = 1 << 24;

/// Which free address a request for "any address" gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The lowest free address (the default).
    FirstFree,
    /// The next free address after the last one handed out, wrapping
    /// (`com.docker.network.ipam.serial = "true"`).
    Serial,
}

/// The taken offsets.
enum Taken {
    /// Bit `i` of word `i / 64` is offset `i`; bits past the range stay 0.
    Bitmap(Vec<u64>),
    /// Every taken offset.
    Sparse(BTreeSet<u128>),
}

impl Taken {
    #[cfg(test)]
    fn contains(&self, off: u128) -> bool {
        match self {
            Taken::Bitmap(words) => {
                let i = off as usize;
                words[i / 64] & (1 << (i % 64)) != 0
            }
            Taken::Sparse(set) => set.contains(&off),
        }
    }

    /// Marks `off` taken; false if it already was.
    fn insert(&mut self, off: u128) -> bool {
        match self {
            Taken::Bitmap(words) => {
                let i = off as usize;
                let (word, bit) = (&mut words[i / 64], 1u64 << (i % 64));
                let was_free = *word & bit == 0;
                *word |= bit;
                was_free
            }
            Taken::Sparse(set) => set.insert(off),
        }
    }

    /// Marks `off` free; false if it already was.
    fn remove(&mut self, off: u128) -> bool {
        match self {
            Taken::Bitmap(words) => {
                let i = off as usize;
                let (word, bit) = (&mut words[i / 64], 1u64 << (i % 64));
                let was_taken = *word & bit != 0;
                *word &= !bit;
                was_taken
            }
            Taken::Sparse(set) => set.remove(&off),
        }
    }

    /// The lowest free offset in `from..=to`.
    fn first_free(&self, from: u128, to: u128) -> Option<u128> {
        if from > to {
            return None;
        }
        match self {
            Taken::Bitmap(words) => {
                let (from, to) = (from as usize, to as usize);
                let mut mask = !0u64 << (from % 64);
                for (w, word) in words.iter().enumerate().take(to / 64 + 1).skip(from / 64) {
                    let free = !word & mask;
                    if free != 0 {
                        let bit = w * 64 + free.trailing_zeros() as usize;
                        return (bit <= to).then_some(bit as u128);
                    }
                    mask = !0;
                }
                None
            }
            Taken::Sparse(set) => {
                let mut candidate = from;
                for &taken in set.range(from..=to) {
                    if taken != candidate {
                        break;
                    }
                    if candidate == to {
                        return None;
                    }
                    candidate += 1;
                }
                Some(candidate)
            }
        }
    }

    /// Taken offsets as inclusive runs, in order.
    fn runs(&self) -> Vec<(u128, u128)> {
        let mut runs = Vec::new();
        let mut open: Option<u128> = None;
        match self {
            Taken::Bitmap(words) => {
                for (w, &word) in words.iter().enumerate() {
                    let base = (w * 64) as u128;
                    if word == 0 || word == !0 {
                        match (word == !0, open) {
                            (true, None) => open = Some(base),
                            (false, Some(start)) => {
                                runs.push((start, base - 1));
                                open = None;
                            }
                            _ => {}
                        }
                        continue;
                    }
                    for b in 0..64 {
                        let taken = word >> b & 1 == 1;
                        match (taken, open) {
                            (true, None) => open = Some(base + b),
                            (false, Some(start)) => {
                                runs.push((start, base + b - 1));
                                open = None;
                            }
                            _ => {}
                        }
                    }
                }
                // Bits past the range are never set, so a run still open
                // ends with the last word.
                if let Some(start) = open {
                    runs.push((start, (words.len() * 64) as u128 - 1));
                }
            }
            Taken::Sparse(set) => {
                let mut prev = 0;
                for &off in set {
                    match open {
                        Some(_) if off == prev + 1 => {}
                        Some(start) => {
                            runs.push((start, prev));
                            open = Some(off);
                        }
                        None => open = Some(off),
                    }
                    prev = off;
                }
                if let Some(start) = open {
                    runs.push((start, prev));
                }
            }
        }
        runs
    }
}

/// The allocator of one pool's usable range `0..=max`.
pub struct Allocator {
    taken: Taken,
    /// The largest offset; `None` when the range is empty.
    max: Option<u128>,
    policy: Policy,
    /// First-free: every offset below this one is taken.
    low: u128,
    /// The last offset handed out for "any address" (serial's cursor).
    last: Option<u128>,
    /// How many offsets are taken.
    count: u128,
}

impl fmt::Debug for Allocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.taken {
            Taken::Bitmap(_) => "bitmap",
            Taken::Sparse(_) => "sparse",
        };
        f.debug_struct("Allocator")
            .field("kind", &kind)
            .field("max", &self.max)
            .field("policy", &self.policy)
            .field("taken", &self.count)
            .field("last", &self.last)
            .finish()
    }
}

impl Allocator {
    /// An allocator for offsets `0..=max` (none when `max` is `None`).
    pub fn new(max: Option<u128>, policy: Policy) -> Allocator {
        let taken = match max {
            Some(m) if m >= BITMAP_LIMIT => Taken::Sparse(BTreeSet::new()),
            Some(m) => Taken::Bitmap(vec![0; (m as usize) / 64 + 1]),
            None => Taken::Bitmap(Vec::new()),
        };
        Allocator { taken, max, policy, low: 0, last: None, count: 0 }
    }

    /// The reuse policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The largest offset, if the range is not empty.
    pub fn max(&self) -> Option<u128> {
        self.max
    }

    /// Whether `off` is taken.
    #[cfg(test)]
    pub fn is_taken(&self, off: u128) -> bool {
        self.in_range(off) && self.taken.contains(off)
    }

    fn in_range(&self, off: u128) -> bool {
        self.max.is_some_and(|m| off <= m)
    }

    /// Takes a free offset according to the policy; `None` when every
    /// offset is taken.
    pub fn take_any(&mut self) -> Option<u128> {
        let max = self.max?;
        let found = match self.policy {
            Policy::FirstFree => self.taken.first_free(self.low, max),
            Policy::Serial => {
                let start = self.last.and_then(|l| l.checked_add(1)).filter(|s| *s <= max).unwrap_or(0);
                self.taken.first_free(start, max).or_else(|| match start {
                    0 => None,
                    _ => self.taken.first_free(0, start - 1),
                })
            }
        }?;
        self.taken.insert(found);
        self.count += 1;
        if self.policy == Policy::FirstFree {
            // Everything below `found` was taken, and now `found` is too.
            self.low = found.saturating_add(1);
        }
        self.last = Some(found);
        Some(found)
    }

    /// Takes `off`; false if it is already taken. `off` must be in range.
    pub fn take(&mut self, off: u128) -> bool {
        assert!(self.in_range(off), "offset {off} is outside the allocator's range");
        let fresh = self.taken.insert(off);
        if fresh {
            self.count += 1;
        }
        fresh
    }

    /// Frees `off`; false if it was not taken (or is out of range).
    pub fn free(&mut self, off: u128) -> bool {
        if !self.in_range(off) || !self.taken.remove(off) {
            return false;
        }
        self.count -= 1;
        self.low = self.low.min(off);
        true
    }

    /// The last offset handed out by [`Allocator::take_any`].
    pub fn last(&self) -> Option<u128> {
        self.last
    }

    /// Restores the serial cursor (after a failed save, or on load).
    pub fn set_last(&mut self, last: Option<u128>) {
        self.last = last.filter(|l| self.in_range(*l));
    }

    /// How many offsets are taken.
    #[cfg(test)]
    pub fn count(&self) -> u128 {
        self.count
    }

    /// The taken offsets as inclusive runs, in order.
    pub fn runs(&self) -> Vec<(u128, u128)> {
        self.taken.runs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slash_16_range_is_handed_out_in_order_then_exhausted() {
        // The 65,534 usable addresses of a /16.
        let mut a = Allocator::new(Some(65_533), Policy::FirstFree);
        for expect in 0..=65_533u128 {
            assert_eq!(a.take_any(), Some(expect));
        }
        assert_eq!(a.take_any(), None);
        assert_eq!(a.count(), 65_534);
        assert_eq!(a.runs(), vec![(0, 65_533)]);
        assert!(a.free(1000));
        assert!(!a.free(1000));
        assert_eq!(a.take_any(), Some(1000));
        assert_eq!(a.take_any(), None);
    }

    #[test]
    fn first_free_reuses_the_lowest_released_offset() {
        let mut a = Allocator::new(Some(9), Policy::FirstFree);
        for _ in 0..6 {
            a.take_any();
        }
        a.free(4);
        a.free(2);
        assert_eq!(a.take_any(), Some(2));
        assert_eq!(a.take_any(), Some(4));
        assert_eq!(a.take_any(), Some(6));
    }

    #[test]
    fn serial_moves_on_and_wraps() {
        for max in [9, BITMAP_LIMIT + 9] {
            let mut a = Allocator::new(Some(max), Policy::Serial);
            for expect in 0..4 {
                assert_eq!(a.take_any(), Some(expect));
            }
            a.free(1);
            assert_eq!(a.take_any(), Some(4), "serial does not go back to a released offset");
            assert!(a.take(max));
            assert!(a.take(max - 1));
            a.set_last(Some(max - 2));
            // Past the end: wraps to the lowest free offset.
            assert_eq!(a.take_any(), Some(1));
            assert_eq!(a.take_any(), Some(5));
        }
    }

    #[test]
    fn specific_offsets_and_any_never_collide() {
        for max in [200, BITMAP_LIMIT * 4] {
            let mut a = Allocator::new(Some(max), Policy::FirstFree);
            assert!(a.take(0));
            assert!(a.take(2));
            assert!(!a.take(2));
            assert_eq!(a.take_any(), Some(1));
            assert_eq!(a.take_any(), Some(3));
            assert!(a.is_taken(3));
            assert!(!a.is_taken(4));
            assert!(!a.is_taken(max + 1));
            assert!(!a.free(max + 1));
            assert_eq!(a.runs(), vec![(0, 3)]);
        }
    }

    #[test]
    fn sparse_handles_the_top_of_the_range() {
        let max = u128::MAX - 1;
        let mut a = Allocator::new(Some(max), Policy::FirstFree);
        assert!(a.take(max));
        assert!(a.take(max - 1));
        assert_eq!(a.taken.first_free(max - 1, max), None);
        assert_eq!(a.taken.first_free(max - 3, max), Some(max - 3));
        assert_eq!(a.runs(), vec![(max - 1, max)]);
    }

    #[test]
    fn runs_split_at_gaps_and_word_edges() {
        for max in [300, BITMAP_LIMIT] {
            let mut a = Allocator::new(Some(max), Policy::FirstFree);
            for off in (0..=70).chain(128..=191).chain([193, 255, 256, max]) {
                a.take(off);
            }
            assert_eq!(a.runs(), vec![(0, 70), (128, 191), (193, 193), (255, 256), (max, max)]);
        }
    }

    #[test]
    fn an_empty_range_has_nothing_to_give() {
        let mut a = Allocator::new(None, Policy::FirstFree);
        assert_eq!(a.take_any(), None);
        assert!(!a.is_taken(0));
        assert!(a.runs().is_empty());
    }

    #[test]
    fn a_range_whose_size_is_a_word_multiple_ends_cleanly() {
        let mut a = Allocator::new(Some(127), Policy::FirstFree);
        for _ in 0..128 {
            assert!(a.take_any().is_some());
        }
        assert_eq!(a.take_any(), None);
        assert_eq!(a.runs(), vec![(0, 127)]);
    }
}
