//! A map whose contents hash to a root cheaply after small changes.
//!
//! Entries fall into 256 buckets by [`MapKey::bucket`]. A bucket's hash is BLAKE3 over
//! `canonical(key) || canonical(value)` of its entries in key order; the map's root is BLAKE3
//! over the 256 bucket hashes. Writes mark their bucket dirty and [`HashedMap::rehash`] only
//! recomputes dirty buckets, so a block's hashing cost follows what it changed.
//!
//! Every write also remembers the key's previous value the first time the key is touched
//! since the last [`HashedMap::commit`], so [`HashedMap::rollback`] can undo a failed block,
//! and remembers the key as touched until [`HashedMap::take_touched`] hands the changes to
//! storage.

use std::collections::{BTreeMap, BTreeSet};

use gridwork_types::{Encode, Hash};

/// A key of a [`HashedMap`]. Buckets must be contiguous in key order: every key of bucket
/// `b` sorts at or after `bucket_start(b)` and before every key of bucket `b + 1`.
pub(crate) trait MapKey: Ord + Clone + Encode {
    /// Which of the 256 buckets the key belongs to.
    fn bucket(&self) -> u8;
    /// The smallest possible key of bucket `b`.
    fn bucket_start(b: u8) -> Self;
}

impl MapKey for gridwork_types::Address {
    fn bucket(&self) -> u8 {
        self.0[0]
    }
    fn bucket_start(b: u8) -> Self {
        let mut bytes = [0; 20];
        bytes[0] = b;
        gridwork_types::Address(bytes)
    }
}

impl MapKey for Hash {
    fn bucket(&self) -> u8 {
        self.0[0]
    }
    fn bucket_start(b: u8) -> Self {
        let mut bytes = [0; 32];
        bytes[0] = b;
        Hash(bytes)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct HashedMap<K, V> {
    map: BTreeMap<K, V>,
    buckets: Vec<Hash>,
    dirty: BTreeSet<u8>,
    undo: BTreeMap<K, Option<V>>,
    touched: BTreeSet<K>,
}

impl<K: MapKey, V: Encode + Clone> HashedMap<K, V> {
    /// A map of `entries`, fully hashed; nothing counts as touched.
    pub(crate) fn new(entries: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut map = HashedMap {
            map: entries.into_iter().collect(),
            buckets: vec![Hash::ZERO; 256],
            dirty: (0..=255).collect(),
            undo: BTreeMap::new(),
            touched: BTreeSet::new(),
        };
        map.rehash();
        map
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    pub(crate) fn range<R: std::ops::RangeBounds<K>>(
        &self,
        range: R,
    ) -> impl Iterator<Item = (&K, &V)> {
        self.map.range(range)
    }

    pub(crate) fn remove(&mut self, key: &K) {
        if let Some(previous) = self.map.remove(key) {
            self.note_write(key.clone(), Some(previous));
        }
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        let previous = self.map.insert(key.clone(), value);
        self.note_write(key, previous);
    }

    fn note_write(&mut self, key: K, previous: Option<V>) {
        self.dirty.insert(key.bucket());
        self.touched.insert(key.clone());
        self.undo.entry(key).or_insert(previous);
    }

    /// Restores every key written since the last commit.
    pub(crate) fn rollback(&mut self) {
        for (key, previous) in std::mem::take(&mut self.undo) {
            self.dirty.insert(key.bucket());
            match previous {
                Some(v) => self.map.insert(key, v),
                None => self.map.remove(&key),
            };
        }
        self.rehash();
    }

    /// Forgets the undo log: the writes since the last commit are final.
    pub(crate) fn commit(&mut self) {
        self.undo.clear();
    }

    /// Recomputes the hashes of dirty buckets.
    pub(crate) fn rehash(&mut self) {
        let mut bytes = Vec::new();
        for bucket in std::mem::take(&mut self.dirty) {
            let mut h = blake3::Hasher::new();
            let entries = self
                .map
                .range(K::bucket_start(bucket)..)
                .take_while(|(k, _)| k.bucket() == bucket);
            for (key, value) in entries {
                bytes.clear();
                key.encode(&mut bytes);
                value.encode(&mut bytes);
                h.update(&bytes);
            }
            self.buckets[bucket as usize] = Hash(*h.finalize().as_bytes());
        }
    }

    /// BLAKE3 over the bucket hashes. Call [`HashedMap::rehash`] first.
    pub(crate) fn root(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        for b in &self.buckets {
            h.update(b.as_bytes());
        }
        Hash(*h.finalize().as_bytes())
    }

    /// The keys touched since the last call, with their values now (`None`: removed).
    pub(crate) fn take_touched(&mut self) -> Vec<(K, Option<V>)> {
        std::mem::take(&mut self.touched)
            .into_iter()
            .map(|k| {
                let v = self.map.get(&k).cloned();
                (k, v)
            })
            .collect()
    }

    /// Marks every entry touched (a new chain persists all of genesis).
    pub(crate) fn touch_all(&mut self) {
        self.touched = self.map.keys().cloned().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridwork_types::Address;
    use proptest::prelude::*;

    proptest! {
        /// Incremental rehashing gives the root a fresh map of the same entries has, and a
        /// rollback restores the root from before the writes.
        #[test]
        fn incremental_root_equals_fresh_root_and_rollback_restores(
            initial in prop::collection::btree_map(any::<[u8; 2]>(), any::<u64>(), 0..50),
            writes in prop::collection::vec((any::<[u8; 2]>(), any::<u64>()), 1..20),
        ) {
            let key = |k: [u8; 2]| { let mut a = [0u8; 20]; a[..2].copy_from_slice(&k); Address(a) };
            let mut map = HashedMap::new(initial.iter().map(|(k, v)| (key(*k), *v)));
            map.commit();
            let before = map.root();
            for (k, v) in &writes {
                map.insert(key(*k), *v);
            }
            map.rehash();
            let fresh = HashedMap::new(map.iter().map(|(k, v)| (*k, *v)));
            prop_assert_eq!(map.root(), fresh.root());
            map.rollback();
            prop_assert_eq!(map.root(), before);
        }
    }
}
