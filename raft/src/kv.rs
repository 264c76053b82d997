//! A minimal key-value view for deterministic apply: reads from a store, buffers writes.
//!
//! Shard apply logic runs against [`Txn`], so it sees its own earlier writes within one apply
//! batch and can be tested on a `BTreeMap` with no I/O.

use std::collections::BTreeMap;

/// Read access to a group's key space (keys are relative to the group).
pub trait KvRead {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>>;
    /// Up to `limit` pairs with keys starting with `prefix` and strictly greater than `after`
    /// (when given), in key order.
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

impl KvRead for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        Ok(BTreeMap::get(self, key).cloned())
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// Buffered writes over a [`KvRead`]; `None` marks a delete.
pub struct Txn<'a, R: KvRead + ?Sized> {
    base: &'a R,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// A transaction reads like a store, its own writes included.
impl<R: KvRead + ?Sized> KvRead for Txn<'_, R> {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        Txn::get(self, key)
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Txn::scan(self, prefix, after, limit)
    }
}

impl<'a, R: KvRead + ?Sized> Txn<'a, R> {
    /// A transaction with no writes yet.
    pub fn new(base: &'a R) -> Self {
        Self {
            base,
            writes: BTreeMap::new(),
        }
    }

    /// The value at `key`, including this transaction's writes.
    pub fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(key),
        }
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Up to `limit` pairs with keys starting with `prefix` and greater than `after`, in key
    /// order, including this transaction's writes.
    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let pending: Vec<_> = self
            .writes
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| after.is_none_or(|a| k.as_slice() > a))
            .collect();
        // Each pending delete can hide at most one stored row, so this many stored rows
        // always cover the first `limit` of the merged view.
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self
            .base
            .scan(prefix, after, limit.saturating_add(pending.len()))?
            .into_iter()
            .collect();
        for (k, v) in pending {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    /// The store under this transaction, without its buffered writes.
    pub fn base(&self) -> &'a R {
        self.base
    }

    /// The buffered writes, in key order.
    pub fn into_writes(self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_scan_sees_its_own_writes_in_key_order() {
        let base: BTreeMap<Vec<u8>, Vec<u8>> = [b"p1", b"p2", b"p3", b"p5", b"q1"]
            .iter()
            .map(|k| (k.to_vec(), b"base".to_vec()))
            .collect();
        let mut txn = Txn::new(&base);
        txn.delete(b"p1".to_vec());
        txn.delete(b"p2".to_vec());
        txn.put(b"p4".to_vec(), b"new".to_vec());
        txn.put(b"q0".to_vec(), b"other prefix".to_vec());
        let keys =
            |rows: Vec<(Vec<u8>, Vec<u8>)>| rows.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(txn.scan(b"p", None, 2).unwrap()),
            vec![b"p3".to_vec(), b"p4".to_vec()]
        );
        assert_eq!(
            keys(txn.scan(b"p", Some(b"p3"), 10).unwrap()),
            vec![b"p4".to_vec(), b"p5".to_vec()]
        );
    }
}
