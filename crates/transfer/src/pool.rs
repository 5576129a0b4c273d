//! Buffers kept for reuse.
//!
//! The data path moves megabyte buffers (request bodies, plaintext chunks) between threads.
//! Allocated afresh, each one made the kernel zero new pages for every byte moved (perf:
//! `clear_page_erms` was up to half of a pull on a 2-core machine); a reused buffer's pages
//! are already there.

use std::sync::Mutex;

/// A bounded stack of empty buffers.
#[derive(Debug)]
pub struct BufferPool {
    bufs: Mutex<Vec<Vec<u8>>>,
    count: usize,
    max_len: usize,
}

impl BufferPool {
    /// A pool keeping at most `count` buffers, none with room for more than `max_len` bytes.
    pub const fn new(count: usize, max_len: usize) -> BufferPool {
        BufferPool {
            bufs: Mutex::new(Vec::new()),
            count,
            max_len,
        }
    }

    fn bufs(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.bufs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer with room for `capacity` bytes, reused when one is free.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buf = self.bufs().pop().unwrap_or_default();
        buf.clear();
        buf.reserve(capacity);
        buf
    }

    /// Keeps `buf` for reuse (drops it when the pool is full or it is too large).
    pub fn give_back(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > self.max_len {
            return;
        }
        let mut bufs = self.bufs();
        if bufs.len() < self.count {
            bufs.push(buf);
        }
    }

    /// Whether the buffer whose memory starts at `ptr` is in the pool (for tests).
    pub fn holds(&self, ptr: *const u8) -> bool {
        self.bufs().iter().any(|b| b.as_ptr() == ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_handed_out_again_and_oversized_ones_are_not_kept() {
        let pool = BufferPool::new(2, 1 << 20);
        let mut a = pool.take(1000);
        a.extend_from_slice(b"old bytes");
        let ptr = a.as_ptr();
        pool.give_back(a);
        assert!(pool.holds(ptr));
        let again = pool.take(10);
        assert_eq!((again.as_ptr(), again.len()), (ptr, 0));
        let big = Vec::with_capacity(2 << 20);
        let big_ptr = big.as_ptr();
        pool.give_back(big);
        assert!(!pool.holds(big_ptr));
        for _ in 0..3 {
            pool.give_back(Vec::with_capacity(100));
        }
        assert_eq!(pool.bufs().len(), 2);
    }
}
