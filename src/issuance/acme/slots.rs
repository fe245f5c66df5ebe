//! How many ACME orders each issuer has in flight. A slot is held by an attempt until it ends;
//! a slot not touched for a while (its attempt vanished without cleanup) is taken back, so a
//! leak can never stall an issuer.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// A slot untouched this long is considered abandoned. Attempts under way touch theirs at
/// every pass, at most a minute apart.
pub const SLOT_LEASE: Duration = Duration::from_secs(180);

pub struct OrderSlots {
    max_per_issuer: usize,
    slots: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

impl OrderSlots {
    pub fn new(max_per_issuer: usize) -> Self {
        Self { max_per_issuer, slots: Mutex::default() }
    }

    /// Takes (or keeps, and touches) a slot for the attempt `namespace/name` among `issuer`'s;
    /// false when the issuer already has its maximum of other attempts under way.
    pub fn take(&self, issuer: &str, namespace: &str, name: &str) -> bool {
        self.take_at(issuer, &format!("{namespace}/{name}"), Instant::now())
    }

    fn take_at(&self, issuer: &str, attempt: &str, now: Instant) -> bool {
        let mut slots = self.slots.lock().expect("slots lock");
        let held = slots.entry(issuer.to_string()).or_default();
        held.retain(|_, touched| now.saturating_duration_since(*touched) < SLOT_LEASE);
        if let Some(touched) = held.get_mut(attempt) {
            *touched = now;
            return true;
        }
        if held.len() >= self.max_per_issuer {
            return false;
        }
        held.insert(attempt.to_string(), now);
        true
    }

    pub fn release(&self, namespace: &str, name: &str) {
        let attempt = format!("{namespace}/{name}");
        let mut slots = self.slots.lock().expect("slots lock");
        for held in slots.values_mut() {
            held.remove(&attempt);
        }
    }

    /// Attempts holding a slot of `issuer`.
    pub fn held(&self, issuer: &str) -> usize {
        self.slots.lock().expect("slots lock").get(issuer).map_or(0, HashMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_issuer_and_released() {
        let slots = OrderSlots::new(2);
        assert!(slots.take("a", "shop", "x-1") && slots.take("a", "shop", "y-1"));
        assert!(!slots.take("a", "shop", "z-1"), "the third order of issuer a waits");
        assert!(!slots.take("a", "blog", "x-1"), "another namespace's x-1 is another attempt");
        assert!(slots.take("b", "shop", "z-1"), "other issuers are not held back");
        assert!(slots.take("a", "shop", "x-1"), "an attempt keeps its slot");
        slots.release("blog", "x-1");
        assert!(!slots.take("a", "shop", "z-1"), "releasing another namespace's x-1 frees nothing");
        slots.release("shop", "x-1");
        assert!(slots.take("a", "shop", "z-1"));
        assert_eq!(slots.held("a"), 2);
    }

    #[test]
    fn abandoned_slots_are_taken_back() {
        let slots = OrderSlots::new(1);
        let start = Instant::now();
        assert!(slots.take_at("a", "gone-1", start));
        assert!(!slots.take_at("a", "next-1", start + SLOT_LEASE / 2));
        assert!(slots.take_at("a", "next-1", start + SLOT_LEASE + Duration::from_secs(1)));
    }
}
