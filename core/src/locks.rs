//! Per-name serialization: operations on the same object name run one at a
//! time, different names in parallel. Driver calls under a lock are bounded
//! by their deadline, so a waiter waits at most that long per holder.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex};

/// A set of names currently being worked on.
#[derive(Debug, Default)]
pub struct NameLocks {
    busy: Mutex<HashSet<String>>,
    freed: Condvar,
}

/// Holds a name until dropped.
#[derive(Debug)]
pub struct NameGuard<'a> {
    locks: &'a NameLocks,
    name: String,
}

impl NameLocks {
    /// Waits until no one holds `name`, then holds it.
    pub fn lock(&self, name: &str) -> NameGuard<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while busy.contains(name) {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        busy.insert(name.to_string());
        NameGuard { locks: self, name: name.to_string() }
    }
}

impl Drop for NameGuard<'_> {
    fn drop(&mut self) {
        self.locks.busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.name);
        self.locks.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn the_same_name_is_held_by_one_at_a_time_and_other_names_are_free() {
        let locks = Arc::new(NameLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (locks, inside, most) = (locks.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    let _g = locks.lock("vol");
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        let _other = locks.lock("other");
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }
}
