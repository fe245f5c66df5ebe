//! How many ACME orders each issuer has in flight. A slot is held by an attempt until it ends;
//! a slot not touched for a while (its attempt vanished without cleanup) is taken back, so a
//! leak can never stall an issuer. Attempts that find no slot queue for one, first come first
//! served, and a slot given back names the attempts it lets in, so that they can be woken at
//! once: an order takes well under a second at a quick CA, and a waiter that only looked again
//! every few seconds left the slots idle most of the time.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

/// A slot (or a place in the queue) untouched this long is considered abandoned. Attempts
/// under way touch theirs at every pass, at most a minute apart.
pub const SLOT_LEASE: Duration = Duration::from_secs(180);

/// An attempt, by namespace and name.
pub type AttemptKey = (String, String);

pub struct OrderSlots {
    max_per_issuer: usize,
    issuers: Mutex<HashMap<String, Issuer>>,
}

/// One issuer's slots and queue.
#[derive(Default)]
struct Issuer {
    held: HashMap<AttemptKey, Instant>,
    waiting: VecDeque<(AttemptKey, Instant)>,
}

impl Issuer {
    fn forget_abandoned(&mut self, now: Instant) {
        let live = |touched: &Instant| now.saturating_duration_since(*touched) < SLOT_LEASE;
        self.held.retain(|_, touched| live(touched));
        self.waiting.retain(|(_, touched)| live(touched));
    }

    fn free(&self, max: usize) -> usize {
        max.saturating_sub(self.held.len())
    }

    /// The waiters a free slot would let in now: the first ones, one per free slot.
    fn admissible(&self, max: usize) -> Vec<AttemptKey> {
        self.waiting.iter().take(self.free(max)).map(|(attempt, _)| attempt.clone()).collect()
    }
}

impl OrderSlots {
    pub fn new(max_per_issuer: usize) -> Self {
        Self { max_per_issuer, issuers: Mutex::default() }
    }

    /// Takes (or keeps, and touches) a slot for the attempt `namespace/name` among `issuer`'s;
    /// false when the issuer has its maximum of other attempts under way, or slots are free
    /// only for attempts that queued before this one (which then keeps its place in the queue).
    pub fn take(&self, issuer: &str, namespace: &str, name: &str) -> bool {
        self.take_at(issuer, (namespace.to_string(), name.to_string()), Instant::now())
    }

    fn take_at(&self, issuer: &str, attempt: AttemptKey, now: Instant) -> bool {
        let mut issuers = self.issuers.lock().expect("slots lock");
        let slots = issuers.entry(issuer.to_string()).or_default();
        slots.forget_abandoned(now);
        if let Some(touched) = slots.held.get_mut(&attempt) {
            *touched = now;
            return true;
        }
        let place = slots.waiting.iter().position(|(waiter, _)| *waiter == attempt);
        if place.unwrap_or(slots.waiting.len()) < slots.free(self.max_per_issuer) {
            if let Some(place) = place {
                slots.waiting.remove(place);
            }
            slots.held.insert(attempt, now);
            return true;
        }
        match place {
            Some(place) => slots.waiting[place].1 = now,
            None => slots.waiting.push_back((attempt, now)),
        }
        false
    }

    /// Gives back the slot of the attempt `namespace/name` (or its place in a queue) and
    /// returns the waiting attempts that can now take a slot, to be woken.
    pub fn release(&self, namespace: &str, name: &str) -> Vec<AttemptKey> {
        let attempt = (namespace.to_string(), name.to_string());
        let mut issuers = self.issuers.lock().expect("slots lock");
        let mut wake = Vec::new();
        for slots in issuers.values_mut() {
            slots.waiting.retain(|(waiter, _)| *waiter != attempt);
            if slots.held.remove(&attempt).is_some() {
                wake.extend(slots.admissible(self.max_per_issuer));
            }
        }
        wake
    }

    /// Attempts holding a slot of `issuer`.
    pub fn held(&self, issuer: &str) -> usize {
        self.issuers.lock().expect("slots lock").get(issuer).map_or(0, |slots| slots.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, name: &str) -> AttemptKey {
        (namespace.to_string(), name.to_string())
    }

    #[test]
    fn slots_are_bounded_per_issuer_and_released() {
        let slots = OrderSlots::new(2);
        assert!(slots.take("a", "shop", "x-1") && slots.take("a", "shop", "y-1"));
        assert!(!slots.take("a", "shop", "z-1"), "the third order of issuer a waits");
        assert!(!slots.take("a", "blog", "x-1"), "another namespace's x-1 is another attempt");
        assert!(slots.take("b", "shop", "z-1"), "other issuers are not held back");
        assert!(slots.take("a", "shop", "x-1"), "an attempt keeps its slot");
        assert_eq!(slots.release("blog", "x-1"), vec![], "a waiter leaving frees no slot");
        assert!(!slots.take("a", "shop", "z-1"), "releasing another namespace's x-1 frees nothing");
        assert_eq!(slots.release("shop", "x-1"), vec![key("shop", "z-1")], "the first waiter is woken");
        assert!(slots.take("a", "shop", "z-1"));
        assert_eq!(slots.held("a"), 2);
    }

    #[test]
    fn waiters_take_free_slots_in_the_order_they_came() {
        let slots = OrderSlots::new(2);
        assert!(slots.take("a", "ns", "x-1") && slots.take("a", "ns", "y-1"));
        assert!(!slots.take("a", "ns", "first-1"));
        assert!(!slots.take("a", "ns", "second-1"));
        assert!(!slots.take("a", "ns", "first-1"), "asking again keeps its place");
        assert_eq!(slots.release("ns", "x-1"), vec![key("ns", "first-1")]);
        assert!(!slots.take("a", "ns", "late-1"), "a newcomer does not pass the queue");
        assert!(!slots.take("a", "ns", "second-1"), "nor does the second waiter pass the first");
        assert!(slots.take("a", "ns", "first-1"));
        assert_eq!(slots.release("ns", "y-1"), vec![key("ns", "second-1")]);
        assert_eq!(slots.release("ns", "first-1"), vec![key("ns", "second-1"), key("ns", "late-1")]);
        assert!(slots.take("a", "ns", "late-1"), "a waiter may take a slot before one ahead of it that is free too");
        assert!(slots.take("a", "ns", "second-1"));
        assert!(!slots.take("a", "ns", "next-1"));
    }

    #[test]
    fn abandoned_slots_and_places_are_taken_back() {
        let slots = OrderSlots::new(1);
        let start = Instant::now();
        assert!(slots.take_at("a", key("ns", "gone-1"), start));
        assert!(!slots.take_at("a", key("ns", "vanished-1"), start));
        assert!(!slots.take_at("a", key("ns", "next-1"), start + SLOT_LEASE / 2));
        let later = start + SLOT_LEASE + Duration::from_secs(1);
        assert!(slots.take_at("a", key("ns", "next-1"), later), "the holder and the first waiter vanished");
    }
}
