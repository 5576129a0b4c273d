//! Buffers kept for reuse.
//!
//! The data path moves megabyte buffers (request bodies, plaintext chunks) between threads.
//! Allocated afresh, each one made the kernel zero new pages for every byte moved (perf:
//! `clear_page_erms` was up to half of a pull on a 2-core machine); a reused buffer's pages
//! are already there.

use std::sync::Mutex;

/// Buffers smaller than this are neither pooled nor taken from the pool: the allocator keeps
/// small blocks itself, and in the pool they would crowd out the large ones.
const SMALL: usize = 128 * 1024;

/// A bounded set of empty buffers.
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

    /// An empty buffer with room for `capacity` bytes, reused when one is free: the smallest
    /// that is large enough and at most twice as large, else the largest smaller one, grown
    /// (buffers more than twice as large stay in the pool). A buffer is allocated (or grown) to the
    /// next power of two, at most the pool's largest, so that it fits the next request of a
    /// similar size: growing one is a fresh allocation, as costly as a miss.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        if capacity < SMALL {
            return Vec::with_capacity(capacity);
        }
        let mut buf = {
            let mut bufs = self.bufs();
            let fits = bufs
                .iter()
                .enumerate()
                // At most twice what is asked: a small answer must not hold (and be counted
                // as) a 72 MiB buffer.
                .filter(|(_, b)| b.capacity() >= capacity && b.capacity() / 2 <= capacity)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            let largest = || {
                bufs.iter()
                    .enumerate()
                    .filter(|(_, b)| b.capacity() < capacity)
                    .max_by_key(|(_, b)| b.capacity())
                    .map(|(i, _)| i)
            };
            match fits.or_else(largest) {
                Some(i) => bufs.swap_remove(i),
                None => Vec::new(),
            }
        };
        buf.clear();
        if buf.capacity() < capacity {
            let rounded = capacity.checked_next_power_of_two().unwrap_or(capacity);
            // A fresh allocation, not a grown one: growing copies every byte of the old
            // buffer's capacity (the allocator does not know it is empty), which was 5% of a
            // pull's CPU.
            drop(buf);
            buf = Vec::with_capacity(rounded.min(self.max_len).max(capacity));
        }
        buf
    }

    /// Keeps `buf` for reuse: drops it when it is small or too large, and when the pool is
    /// full of buffers at least as large (otherwise it takes the smallest one's place, so
    /// that small buffers cannot crowd out the large ones a request would have to allocate).
    pub fn give_back(&self, buf: Vec<u8>) {
        if buf.capacity() < SMALL || buf.capacity() > self.max_len {
            return;
        }
        let mut bufs = self.bufs();
        if bufs.len() < self.count {
            bufs.push(buf);
            return;
        }
        let smallest = bufs
            .iter()
            .enumerate()
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, b)| (i, b.capacity()));
        if let Some((i, capacity)) = smallest {
            if capacity < buf.capacity() {
                bufs[i] = buf;
            }
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
    fn a_returned_buffer_is_handed_out_again_and_small_or_oversized_ones_are_not_kept() {
        const K: usize = SMALL;
        let pool = BufferPool::new(2, 16 * K);
        let mut a = pool.take(K + 1000);
        a.extend_from_slice(b"old bytes");
        let ptr = a.as_ptr();
        pool.give_back(a);
        assert!(pool.holds(ptr));
        let again = pool.take(K + 10);
        assert_eq!((again.as_ptr(), again.len()), (ptr, 0));
        assert_eq!(
            again.capacity(),
            2 * K,
            "allocated to the next power of two"
        );
        pool.give_back(again);
        let big = Vec::with_capacity(32 * K);
        let big_ptr = big.as_ptr();
        pool.give_back(big);
        assert!(!pool.holds(big_ptr));
        let small = Vec::with_capacity(K - 1);
        let small_ptr = small.as_ptr();
        pool.give_back(small);
        assert!(!pool.holds(small_ptr));
        let tiny = pool.take(100);
        assert!(pool.holds(ptr), "small requests leave the pool alone");
        drop(tiny);
        for _ in 0..3 {
            pool.give_back(Vec::with_capacity(K));
        }
        assert_eq!(pool.bufs().len(), 2);
        assert!(pool.holds(ptr), "a full pool keeps its larger buffers");
    }

    #[test]
    fn a_request_gets_the_smallest_buffer_that_fits_else_the_largest_grown() {
        const K: usize = SMALL;
        let pool = BufferPool::new(8, 64 * K);
        let (small, medium, large) = (
            Vec::with_capacity(K),
            Vec::with_capacity(5 * K),
            Vec::with_capacity(9 * K),
        );
        let (s, m, l) = (small.as_ptr(), medium.as_ptr(), large.as_ptr());
        for b in [large, small, medium] {
            pool.give_back(b);
        }
        let got = pool.take(4 * K);
        assert_eq!(got.as_ptr(), m, "the smallest that fits");
        let got = pool.take(20 * K);
        assert_eq!(
            got.capacity(),
            32 * K,
            "the largest, grown to a power of two"
        );
        assert!(pool.holds(s) && !pool.holds(l));
        // Never past the pool's largest size unless asked for more.
        assert_eq!(pool.take(64 * K - 5).capacity(), 64 * K);
        assert_eq!(pool.take(64 * K + 5).capacity(), 64 * K + 5);
    }

    /// A small answer must not hold (and be counted as) a buffer many times its size.
    #[test]
    fn a_buffer_more_than_twice_the_request_is_left_in_the_pool() {
        const K: usize = SMALL;
        let pool = BufferPool::new(8, 64 * K);
        let huge = Vec::with_capacity(64 * K);
        let h = huge.as_ptr();
        pool.give_back(huge);
        let got = pool.take(2 * K);
        assert_ne!(got.as_ptr(), h);
        assert!(got.capacity() <= 4 * K, "{}", got.capacity());
        assert!(pool.holds(h));
        let fits = pool.take(40 * K);
        assert_eq!(fits.as_ptr(), h, "one it fits within twice is taken");
    }
}
