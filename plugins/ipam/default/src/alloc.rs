//! The address allocator of one pool: which offsets (of the pool's usable
//! range) are taken, and which free one to hand out next.
//!
//! * Ranges of up to 2^24 addresses use a two-level bitmap: one bit per
//!   address in `u64` words, and one summary bit per word that is full. The
//!   first free address at or after any offset is found in O(words / 64)
//!   (a /8 has 262,144 words and 4,096 summary words; 2 MiB in all), never
//!   by testing addresses one by one.
//! * Bigger ranges (an IPv6 /64) use a sparse ordered set of taken offsets.
//!
//! "Any address" comes from a sub-range (the sub-pool, or the whole pool);
//! a specific address may be anywhere in the pool (as in Docker: a static
//! address outside `--ip-range` is fine).
//!
//! Reuse policy ([`Policy`]): first-free hands out the lowest free offset
//! (a released address comes back first), helped by a low-water mark below
//! which everything is taken; serial hands out the next free offset after
//! the last one handed out, wrapping at the end of the sub-range, so a
//! released address is reused as late as possible. Serial never rescans
//! from the start unless it wraps.

use std::collections::BTreeSet;
use std::fmt;

/// Ranges up to this many addresses get a bitmap.
pub(crate) const BITMAP_LIMIT: u128 = 1 << 24;

/// Which free address a request for "any address" gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The lowest free address (the default).
    FirstFree,
    /// The next free address after the last one handed out, wrapping
    /// (`com.docker.network.ipam.serial = "true"`).
    Serial,
}

/// A bitmap with a summary of full words.
struct Bitmap {
    /// Bit `i % 64` of word `i / 64` is offset `i`; bits past the range
    /// stay 0.
    words: Vec<u64>,
    /// Bit `w % 64` of summary word `w / 64` is set when word `w` is full.
    full: Vec<u64>,
}

impl Bitmap {
    fn new(bits: usize) -> Bitmap {
        let words = bits.div_ceil(64);
        Bitmap { words: vec![0; words], full: vec![0; words.div_ceil(64)] }
    }

    fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    fn mark(&mut self, w: usize) {
        let bit = 1u64 << (w % 64);
        if self.words[w] == !0 {
            self.full[w / 64] |= bit;
        } else {
            self.full[w / 64] &= !bit;
        }
    }

    /// Sets bit `i`; false if it was set.
    fn insert(&mut self, i: usize) -> bool {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        let was_free = self.words[w] & bit == 0;
        self.words[w] |= bit;
        self.mark(w);
        was_free
    }

    /// Clears bit `i`; false if it was clear.
    fn remove(&mut self, i: usize) -> bool {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        let was_taken = self.words[w] & bit != 0;
        self.words[w] &= !bit;
        self.mark(w);
        was_taken
    }

    /// Sets bits `a..=b`; false (and nothing changed) if any was set.
    fn insert_range(&mut self, a: usize, b: usize) -> bool {
        let masks = || {
            (a / 64..=b / 64).map(move |w| {
                let lo = if w == a / 64 { a % 64 } else { 0 };
                let hi = if w == b / 64 { b % 64 } else { 63 };
                (w, (!0u64 >> (63 - hi)) & (!0u64 << lo))
            })
        };
        if masks().any(|(w, m)| self.words[w] & m != 0) {
            return false;
        }
        for (w, m) in masks() {
            self.words[w] |= m;
            self.mark(w);
        }
        true
    }

    /// The lowest clear bit in `from..=to`.
    fn first_free(&self, from: usize, to: usize) -> Option<usize> {
        let last_word = to / 64;
        let mut w = from / 64;
        // The first word, from `from` on.
        let free = !self.words[w] & (!0u64 << (from % 64));
        if free != 0 {
            let bit = w * 64 + free.trailing_zeros() as usize;
            return (bit <= to).then_some(bit);
        }
        w += 1;
        // Then the first word that is not full, through the summary.
        while w <= last_word {
            let open = !self.full[w / 64] & (!0u64 << (w % 64));
            if open == 0 {
                w = (w / 64 + 1) * 64;
                continue;
            }
            let found = (w / 64) * 64 + open.trailing_zeros() as usize;
            if found > last_word {
                return None;
            }
            let bit = found * 64 + (!self.words[found]).trailing_zeros() as usize;
            return (bit <= to).then_some(bit);
        }
        None
    }

    /// Set bits as inclusive runs, in order.
    fn runs(&self) -> Vec<(u128, u128)> {
        let mut runs = Vec::new();
        let mut open: Option<u128> = None;
        for (w, &word) in self.words.iter().enumerate() {
            let base = (w * 64) as u128;
            let mut b = 0u32;
            while b < 64 {
                // Skip to the next change of state within the word.
                let rest = word >> b;
                let (taken, len) = if rest & 1 == 1 {
                    (true, (!rest).trailing_zeros().min(64 - b))
                } else {
                    (false, rest.trailing_zeros().min(64 - b))
                };
                match (taken, open) {
                    (true, None) => open = Some(base + u128::from(b)),
                    (false, Some(start)) => {
                        runs.push((start, base + u128::from(b) - 1));
                        open = None;
                    }
                    _ => {}
                }
                b += len;
            }
        }
        // Bits past the range are never set, so a run still open ends
        // with the last word.
        if let Some(start) = open {
            runs.push((start, (self.words.len() * 64) as u128 - 1));
        }
        runs
    }
}

/// The taken offsets.
enum Taken {
    Bitmap(Bitmap),
    /// Every taken offset.
    Sparse(BTreeSet<u128>),
}

impl Taken {
    fn contains(&self, off: u128) -> bool {
        match self {
            Taken::Bitmap(b) => b.contains(off as usize),
            Taken::Sparse(set) => set.contains(&off),
        }
    }

    fn insert(&mut self, off: u128) -> bool {
        match self {
            Taken::Bitmap(b) => b.insert(off as usize),
            Taken::Sparse(set) => set.insert(off),
        }
    }

    fn remove(&mut self, off: u128) -> bool {
        match self {
            Taken::Bitmap(b) => b.remove(off as usize),
            Taken::Sparse(set) => set.remove(&off),
        }
    }

    /// The lowest free offset in `from..=to`.
    fn first_free(&self, from: u128, to: u128) -> Option<u128> {
        if from > to {
            return None;
        }
        match self {
            Taken::Bitmap(b) => b.first_free(from as usize, to as usize).map(|i| i as u128),
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

    fn runs(&self) -> Vec<(u128, u128)> {
        match self {
            Taken::Bitmap(b) => b.runs(),
            Taken::Sparse(set) => {
                let mut runs: Vec<(u128, u128)> = Vec::new();
                for &off in set {
                    match runs.last_mut() {
                        Some((_, end)) if *end + 1 == off => *end = off,
                        _ => runs.push((off, off)),
                    }
                }
                runs
            }
        }
    }
}

/// The allocator of one pool's usable offsets `0..=max`, handing out "any"
/// address from the sub-range `lo..=hi`.
pub struct Allocator {
    taken: Taken,
    /// The largest offset; `None` when the pool has no usable address.
    max: Option<u128>,
    /// Where "any address" comes from; `None` when nowhere.
    range: Option<(u128, u128)>,
    policy: Policy,
    /// First-free: every offset of the sub-range below this one is taken.
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
            .field("range", &self.range)
            .field("policy", &self.policy)
            .field("taken", &self.count)
            .field("last", &self.last)
            .finish()
    }
}

impl Allocator {
    /// An allocator for offsets `0..=max` (none when `max` is `None`),
    /// handing out "any" address from `range` (which lies inside).
    pub fn new(max: Option<u128>, range: Option<(u128, u128)>, policy: Policy) -> Allocator {
        let taken = match max {
            Some(m) if m >= BITMAP_LIMIT => Taken::Sparse(BTreeSet::new()),
            Some(m) => Taken::Bitmap(Bitmap::new(m as usize + 1)),
            None => Taken::Bitmap(Bitmap::new(0)),
        };
        let range = range.filter(|(lo, hi)| lo <= hi && max.is_some_and(|m| *hi <= m));
        let low = range.map_or(0, |(lo, _)| lo);
        Allocator { taken, max, range, policy, low, last: None, count: 0 }
    }

    /// The pool's reuse policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Where "any address" comes from.
    pub fn range(&self) -> Option<(u128, u128)> {
        self.range
    }

    /// Whether `off` is taken.
    pub fn is_taken(&self, off: u128) -> bool {
        self.in_range(off) && self.taken.contains(off)
    }

    fn in_range(&self, off: u128) -> bool {
        self.max.is_some_and(|m| off <= m)
    }

    /// Takes a free offset of the sub-range by `policy`; `None` when every
    /// one is taken.
    pub fn take_any(&mut self, policy: Policy) -> Option<u128> {
        let (lo, hi) = self.range?;
        let found = match policy {
            Policy::FirstFree => self.taken.first_free(self.low.max(lo), hi),
            Policy::Serial => {
                let start = self.last.and_then(|l| l.checked_add(1)).filter(|s| (lo..=hi).contains(s));
                let start = start.unwrap_or(lo);
                self.taken.first_free(start, hi).or_else(|| match start {
                    s if s == lo => None,
                    s => self.taken.first_free(lo, s - 1),
                })
            }
        }?;
        self.taken.insert(found);
        self.count += 1;
        if policy == Policy::FirstFree {
            // Everything from `low` to `found` was taken, and now `found` is.
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

    /// Takes every offset of `a..=b` (restoring state); false, with nothing
    /// taken, if one already is. Both must be in range.
    pub fn take_run(&mut self, a: u128, b: u128) -> bool {
        assert!(a <= b && self.in_range(b), "run {a}..={b} is outside the allocator's range");
        let fresh = match &mut self.taken {
            Taken::Bitmap(bits) => bits.insert_range(a as usize, b as usize),
            Taken::Sparse(set) => {
                if set.range(a..=b).next().is_some() {
                    return false;
                }
                set.extend(a..=b);
                true
            }
        };
        if fresh {
            self.count += b - a + 1;
        }
        fresh
    }

    /// Frees `off`; false if it was not taken (or is out of range).
    pub fn free(&mut self, off: u128) -> bool {
        if !self.in_range(off) || !self.taken.remove(off) {
            return false;
        }
        self.count -= 1;
        if let Some((lo, hi)) = self.range {
            if (lo..=hi).contains(&off) {
                self.low = self.low.min(off);
            }
        }
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

    fn whole(max: u128, policy: Policy) -> Allocator {
        Allocator::new(Some(max), Some((0, max)), policy)
    }

    #[test]
    fn a_slash_16_range_is_handed_out_in_order_then_exhausted() {
        // The 65,534 usable addresses of a /16.
        let mut a = whole(65_533, Policy::FirstFree);
        for expect in 0..=65_533u128 {
            assert_eq!(a.take_any(Policy::FirstFree), Some(expect));
        }
        assert_eq!(a.take_any(Policy::FirstFree), None);
        assert_eq!(a.count(), 65_534);
        assert_eq!(a.runs(), vec![(0, 65_533)]);
        assert!(a.free(1000));
        assert!(!a.free(1000));
        assert_eq!(a.take_any(Policy::FirstFree), Some(1000));
        assert_eq!(a.take_any(Policy::FirstFree), None);
    }

    #[test]
    fn first_free_reuses_the_lowest_released_offset() {
        let mut a = whole(9, Policy::FirstFree);
        for _ in 0..6 {
            a.take_any(Policy::FirstFree);
        }
        a.free(4);
        a.free(2);
        assert_eq!(a.take_any(Policy::FirstFree), Some(2));
        assert_eq!(a.take_any(Policy::FirstFree), Some(4));
        assert_eq!(a.take_any(Policy::FirstFree), Some(6));
    }

    #[test]
    fn serial_moves_on_and_wraps() {
        for max in [9, BITMAP_LIMIT + 9] {
            let mut a = whole(max, Policy::Serial);
            for expect in 0..4 {
                assert_eq!(a.take_any(Policy::Serial), Some(expect));
            }
            a.free(1);
            assert_eq!(a.take_any(Policy::Serial), Some(4), "serial does not go back to a released offset");
            assert!(a.take(max));
            assert!(a.take(max - 1));
            a.set_last(Some(max - 2));
            // Past the end: wraps to the lowest free offset.
            assert_eq!(a.take_any(Policy::Serial), Some(1));
            assert_eq!(a.take_any(Policy::Serial), Some(5));
        }
    }

    #[test]
    fn specific_offsets_and_any_never_collide() {
        for max in [200, BITMAP_LIMIT * 4] {
            let mut a = whole(max, Policy::FirstFree);
            assert!(a.take(0));
            assert!(a.take(2));
            assert!(!a.take(2));
            assert_eq!(a.take_any(Policy::FirstFree), Some(1));
            assert_eq!(a.take_any(Policy::FirstFree), Some(3));
            assert!(a.is_taken(3));
            assert!(!a.is_taken(4));
            assert!(!a.is_taken(max + 1));
            assert!(!a.free(max + 1));
            assert_eq!(a.runs(), vec![(0, 3)]);
        }
    }

    #[test]
    fn any_comes_from_the_sub_range_and_specific_from_anywhere() {
        for max in [1000, BITMAP_LIMIT * 2] {
            let mut a = Allocator::new(Some(max), Some((100, 103)), Policy::FirstFree);
            assert!(a.take(5), "a specific offset outside the sub-range");
            assert!(a.take(101));
            let got: Vec<_> = (0..3).map(|_| a.take_any(Policy::FirstFree).unwrap()).collect();
            assert_eq!(got, [100, 102, 103]);
            assert_eq!(a.take_any(Policy::FirstFree), None);
            assert_eq!(a.take_any(Policy::Serial), None);
            a.free(5);
            assert_eq!(a.take_any(Policy::FirstFree), None, "freeing outside the sub-range gives nothing");
            a.free(102);
            assert_eq!(a.take_any(Policy::Serial), Some(102));
        }
        let mut none = Allocator::new(Some(10), None, Policy::FirstFree);
        assert_eq!(none.take_any(Policy::FirstFree), None);
        assert!(none.take(10));
    }

    #[test]
    fn the_summary_finds_the_first_free_word_after_full_ones() {
        // 2^24 offsets: 262,144 words, 4,096 summary words.
        let max = BITMAP_LIMIT - 1;
        let mut a = whole(max, Policy::FirstFree);
        assert!(a.take_run(0, max - 70));
        assert_eq!(a.taken.first_free(0, max), Some(max - 69));
        assert!(a.free(64 * 64 * 3 + 7));
        assert_eq!(a.taken.first_free(1, max), Some(64 * 64 * 3 + 7));
        assert_eq!(a.taken.first_free(64 * 64 * 3 + 8, max), Some(max - 69));
        assert_eq!(a.taken.first_free(64 * 64 * 3 + 8, max - 70), None);
        assert!(a.take_run(max - 69, max));
        assert!(!a.take_run(max - 1, max), "a run over taken offsets is refused");
        assert_eq!(a.take_any(Policy::FirstFree), Some(64 * 64 * 3 + 7));
        assert_eq!(a.take_any(Policy::FirstFree), None);
        assert_eq!(a.runs(), vec![(0, max)]);
    }

    #[test]
    fn sparse_handles_the_top_of_the_range() {
        let max = u128::MAX - 1;
        let mut a = whole(max, Policy::FirstFree);
        assert!(a.take(max));
        assert!(a.take(max - 1));
        assert_eq!(a.taken.first_free(max - 1, max), None);
        assert_eq!(a.taken.first_free(max - 3, max), Some(max - 3));
        assert_eq!(a.runs(), vec![(max - 1, max)]);
    }

    #[test]
    fn runs_split_at_gaps_and_word_edges() {
        for max in [300, BITMAP_LIMIT] {
            let mut a = whole(max, Policy::FirstFree);
            for off in (0..=70).chain(128..=191).chain([193, 255, 256, max]) {
                a.take(off);
            }
            assert_eq!(a.runs(), vec![(0, 70), (128, 191), (193, 193), (255, 256), (max, max)]);
        }
    }

    #[test]
    fn an_empty_range_has_nothing_to_give() {
        let mut a = Allocator::new(None, Some((0, 0)), Policy::FirstFree);
        assert_eq!(a.take_any(Policy::FirstFree), None);
        assert!(!a.is_taken(0));
        assert!(a.runs().is_empty());
    }

    #[test]
    fn a_range_whose_size_is_a_word_multiple_ends_cleanly() {
        let mut a = whole(127, Policy::FirstFree);
        for _ in 0..128 {
            assert!(a.take_any(Policy::FirstFree).is_some());
        }
        assert_eq!(a.take_any(Policy::FirstFree), None);
        assert_eq!(a.runs(), vec![(0, 127)]);
    }
}
