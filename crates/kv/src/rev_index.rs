//! The watch index: every `(main, sub, key)` change of the history, in revision
//! order, packed densely.
//!
//! Changes arrive in increasing revision order, so an ordered set of them only
//! ever grows at its right edge, and a B-tree that splits a full node in half
//! (as `imbl`'s does) leaves every node behind that edge half empty: measured
//! with the kv example `mem_footprint`, `OrdSet<(u64, u64, Arc<[u8]>)>` held
//! 78 B per change for 32 B of payload. Here changes live in blocks of up to
//! [`BLOCK_LEN`] in a persistent map keyed by a lower bound of each block's
//! contents: appends fill the last block to the brim, and a snapshot view
//! still shares every block (a write copies at most the one block it changes,
//! as a B-tree copies its leaf).
//!
//! Only pruning removes from the middle; a block that pruning leaves mostly
//! empty gives its spare capacity back, and an empty block is dropped, so the
//! index stays within a constant factor of its contents.
//!
//! The block being filled (the tail) lives beside the map, not in it: an append
//! then touches that one vector instead of finding the last block in the map
//! (two tree seeks per write, about 9% of a put's apply), and the map takes a
//! block only once it is full, one insert per [`BLOCK_LEN`] changes.

use std::ops::Bound;
use std::sync::Arc;

use imbl::OrdMap;

/// One change: main revision, sub-revision, key.
pub(crate) type Change = (u64, u64, Arc<[u8]>);

/// Most changes one block holds.
pub(crate) const BLOCK_LEN: usize = 64;

/// The changes of the history in `(main, sub, key)` order. Cloning is O(1).
/// Two indices are equal when they hold the same changes, however blocked.
#[derive(Clone, Default)]
pub(crate) struct RevIndex {
    /// Blocks by a lower bound of their contents (the first change a block
    /// was given): every change of a block is `>=` its key and `<` the next
    /// block's key. Never an empty block.
    blocks: OrdMap<Change, Arc<Vec<Change>>>,
    /// The newest changes, after every change of `blocks`, at most [`BLOCK_LEN`]:
    /// where appends go (moved into `blocks` once full). May be empty.
    tail: Arc<Vec<Change>>,
}

impl PartialEq for RevIndex {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for RevIndex {}

impl std::fmt::Debug for RevIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl RevIndex {
    /// Builds the index from changes in any order (a restore).
    pub(crate) fn from_unsorted(mut changes: Vec<Change>) -> Self {
        changes.sort_unstable();
        let mut index = RevIndex::default();
        for chunk in changes.chunks(BLOCK_LEN) {
            index.blocks.insert(chunk[0].clone(), Arc::new(chunk.to_vec()));
        }
        index
    }

    /// Appends a change after every change held.
    ///
    /// # Panics
    /// If `change` does not sort after the last change held: writes come in
    /// revision order.
    pub(crate) fn push(&mut self, change: Change) {
        let last = match self.tail.last() {
            Some(last) => Some(last),
            None => self.blocks.get_max().and_then(|(_, b)| b.last()),
        };
        assert!(
            last.is_none_or(|l| *l < change),
            "change ({}, {}) appended out of revision order",
            change.0,
            change.1
        );
        if self.tail.len() >= BLOCK_LEN {
            let full = std::mem::take(&mut self.tail);
            self.blocks.insert(full[0].clone(), full);
        }
        let tail = Arc::make_mut(&mut self.tail);
        tail.reserve_exact(BLOCK_LEN - tail.len());
        tail.push(change);
    }

    /// Removes one change, if held.
    pub(crate) fn remove(&mut self, change: &Change) {
        if self.tail.first().is_some_and(|first| first <= change) {
            if let Ok(at) = self.tail.binary_search(change) {
                Arc::make_mut(&mut self.tail).remove(at);
            }
            return;
        }
        let Some((start, _)) = self.blocks.get_prev(change) else { return };
        let start = start.clone();
        let block = self.blocks.get_mut(&start).expect("the block just found");
        let Ok(at) = block.binary_search(change) else { return };
        let block = Arc::make_mut(block);
        block.remove(at);
        if block.is_empty() {
            self.blocks.remove(&start);
        } else if block.len() <= block.capacity() / 4 {
            block.shrink_to_fit();
        }
    }

    /// Every change in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Change> + '_ {
        self.blocks.values().flat_map(|b| b.iter()).chain(self.tail.iter())
    }

    /// The changes from `start` on (inclusive), in order.
    pub(crate) fn range_from<'a>(&'a self, start: &Change) -> impl Iterator<Item = &'a Change> {
        // The block that may hold `start`, then every later one.
        let lower = match self.blocks.get_prev(start) {
            Some((k, _)) => Bound::Included(k.clone()),
            None => Bound::Unbounded,
        };
        let blocks = self.blocks.range::<_, Change>((lower, Bound::Unbounded));
        let tail = &self.tail[self.tail.partition_point(|c| c < start)..];
        let start = start.clone();
        blocks
            .flat_map(move |(_, b)| {
                let from = b.partition_point(|c| *c < start);
                b[from..].iter()
            })
            .chain(tail)
    }

    /// Number of changes held (walks the blocks: for tests and checks).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.blocks.values().map(|b| b.len()).sum::<usize>() + self.tail.len()
    }

    /// Asserts the blocks' invariants: none empty or over [`BLOCK_LEN`], each
    /// sorted, within its bound and below the next block's bound.
    #[cfg(test)]
    fn check(&self) {
        let mut blocks = self.blocks.iter().peekable();
        while let Some((bound, block)) = blocks.next() {
            assert!(!block.is_empty() && block.len() <= BLOCK_LEN, "block size {}", block.len());
            assert!(block.windows(2).all(|w| w[0] < w[1]), "a block out of order");
            assert!(*bound <= block[0], "a block below its bound");
            if let Some((next, _)) = blocks.peek() {
                assert!(block[block.len() - 1] < **next, "a block reaching into the next");
            }
        }
        assert!(self.tail.len() <= BLOCK_LEN, "tail size {}", self.tail.len());
        assert!(self.tail.windows(2).all(|w| w[0] < w[1]), "the tail out of order");
        if let (Some((_, last)), Some(first)) = (self.blocks.get_max(), self.tail.first()) {
            assert!(last[last.len() - 1] < *first, "the tail below a block");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn change(rev: u64, sub: u64, key: &str) -> Change {
        (rev, sub, Arc::from(key.as_bytes()))
    }

    /// The index against a `BTreeSet` model under appends, removals from anywhere,
    /// range reads from every point, and a snapshot copy that must not change.
    #[test]
    fn the_index_reads_as_an_ordered_set_under_appends_and_removals() {
        let mut index = RevIndex::default();
        let mut model = BTreeSet::new();
        let mut seed = 7u64;
        let mut rng = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        let mut rev = 0;
        let mut frozen = None;
        for step in 0..4000u64 {
            if rng() % 3 != 0 || model.is_empty() {
                rev += 1;
                for sub in 0..=(rng() % 3) {
                    let c = change(rev, sub, &format!("k{}", rng() % 50));
                    index.push(c.clone());
                    model.insert(c);
                }
            } else {
                let victim = model.iter().nth((rng() as usize) % model.len()).cloned().unwrap();
                model.remove(&victim);
                index.remove(&victim);
            }
            index.check();
            if step == 2000 {
                frozen = Some((index.clone(), model.clone()));
            }
            if step % 97 == 0 {
                let from = change(rng() % (rev + 2), rng() % 3, "");
                let got: Vec<_> = index.range_from(&from).cloned().collect();
                let want: Vec<_> = model.range(from..).cloned().collect();
                assert_eq!(got, want, "range at step {step}");
            }
        }
        assert_eq!(
            index.iter().cloned().collect::<Vec<_>>(),
            model.iter().cloned().collect::<Vec<_>>()
        );
        assert_eq!(index.len(), model.len());
        // Pruning: everything below half the revisions goes, emptying whole blocks.
        let old: Vec<_> = model.iter().filter(|c| c.0 < rev / 2).cloned().collect();
        for c in &old {
            model.remove(c);
            index.remove(c);
        }
        index.check();
        assert!(!old.is_empty() && index.iter().eq(model.iter()), "after pruning");
        index.push(change(rev + 1, 0, "last"));
        index.check();
        let (index_then, model_then) = frozen.unwrap();
        let then: Vec<_> = index_then.iter().cloned().collect();
        assert_eq!(
            then,
            model_then.into_iter().collect::<Vec<_>>(),
            "a copy is not changed by later writes"
        );
        let rebuilt = RevIndex::from_unsorted(model.iter().rev().cloned().collect());
        assert_eq!(
            rebuilt.iter().cloned().collect::<Vec<_>>(),
            model.into_iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn removing_what_is_not_held_changes_nothing() {
        let mut index = RevIndex::default();
        index.remove(&change(1, 0, "a"));
        index.push(change(2, 0, "a"));
        index.remove(&change(1, 0, "a"));
        index.remove(&change(2, 0, "b"));
        assert_eq!(index.len(), 1);
    }

    #[test]
    #[should_panic(expected = "out of revision order")]
    fn an_append_out_of_order_is_refused() {
        let mut index = RevIndex::default();
        index.push(change(2, 0, "a"));
        index.push(change(1, 0, "a"));
    }
}
