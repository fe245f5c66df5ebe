//! A map kept from the events of a watch: what to keep of each object, by key. A watch that
//! lists anew (after it lost its place) shows every object again, then says the list is done:
//! what the new list did not show was deleted meanwhile, with no event of its own. The map
//! notes what the list shows and, once it is done, treats the others as deleted. The solver's
//! answers and the caches of attempts and Secrets keep their maps this way.

use kube::runtime::watcher::Event;
use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
};

pub struct WatchedMap<K, V> {
    map: HashMap<K, V>,
    /// While the watch lists anew: the keys the new list has shown so far.
    relisting: Option<HashSet<K>>,
}

impl<K, V> Default for WatchedMap<K, V> {
    fn default() -> Self {
        Self { map: HashMap::new(), relisting: None }
    }
}

impl<K: Hash + Eq + Clone, V> WatchedMap<K, V> {
    /// Takes in one event. `key` says which entry an object is; `update` makes the entry from
    /// what the map held and the object as it is now (`None`: nothing worth keeping); `gone`
    /// is told the entry of an object deleted, and keeps it if it returns true (an entry may
    /// hold what did not come from the watch).
    pub fn apply<O>(
        &mut self,
        event: &Event<O>,
        key: impl Fn(&O) -> K,
        update: impl FnOnce(Option<V>, &O) -> Option<V>,
        mut gone: impl FnMut(&mut V) -> bool,
    ) {
        match event {
            Event::Init => self.relisting = Some(HashSet::new()),
            Event::InitApply(object) | Event::Apply(object) => {
                let key = key(object);
                if let Some(seen) = self.relisting.as_mut() {
                    seen.insert(key.clone());
                }
                let held = self.map.remove(&key);
                if let Some(entry) = update(held, object) {
                    self.map.insert(key, entry);
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.relisting.take() {
                    self.map.retain(|key, entry| seen.contains(key) || gone(entry));
                }
            }
            Event::Delete(object) => {
                let key = key(object);
                if let Some(entry) = self.map.get_mut(&key)
                    && !gone(entry)
                {
                    self.map.remove(&key);
                }
            }
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub fn entry(&mut self, key: K) -> std::collections::hash_map::Entry<'_, K, V> {
        self.map.entry(key)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    pub fn insert(&mut self, key: K, value: V) {
        self.map.insert(key, value);
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn shrink_to_fit(&mut self) {
        self.map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Objects are `(name, value)`; the map keeps the value, or nothing for a negative one.
    fn apply(map: &mut WatchedMap<String, i32>, event: Event<(&str, i32)>) {
        let update = |_: Option<i32>, (_, value): &(&str, i32)| (*value >= 0).then_some(*value);
        map.apply(&event, |(name, _)| name.to_string(), update, |_| false);
    }

    #[test]
    fn what_the_watch_shows_is_kept_by_key_and_a_delete_removes_it() {
        let mut map = WatchedMap::default();
        apply(&mut map, Event::Apply(("a", 1)));
        apply(&mut map, Event::Apply(("a", 2)));
        assert_eq!(map.get(&"a".into()), Some(&2));
        apply(&mut map, Event::Apply(("a", -1)));
        assert_eq!(map.get(&"a".into()), None, "nothing worth keeping: no entry");
        apply(&mut map, Event::Apply(("b", 1)));
        apply(&mut map, Event::Delete(("b", 1)));
        assert!(map.is_empty());
    }

    #[test]
    fn a_relist_drops_what_it_no_longer_shows_once_it_is_done() {
        let mut map = WatchedMap::default();
        apply(&mut map, Event::Apply(("kept", 1)));
        apply(&mut map, Event::Apply(("gone", 1)));
        apply(&mut map, Event::Init);
        apply(&mut map, Event::InitApply(("kept", 2)));
        assert_eq!(map.get(&"gone".into()), Some(&1), "until the list is done, nothing is dropped");
        apply(&mut map, Event::InitDone);
        assert_eq!((map.get(&"kept".into()), map.get(&"gone".into()), map.len()), (Some(&2), None, 1));
    }

    #[test]
    fn an_entry_that_holds_more_than_the_watch_gave_may_outlive_its_object() {
        let mut map: WatchedMap<String, (Option<i32>, bool)> = WatchedMap::default();
        let update = |held: Option<(Option<i32>, bool)>, (_, value): &(&str, i32)| {
            Some((Some(*value), held.is_some_and(|(_, pinned)| pinned)))
        };
        let gone = |entry: &mut (Option<i32>, bool)| {
            entry.0 = None;
            entry.1
        };
        let key = |(name, _): &(&str, i32)| name.to_string();
        map.apply(&Event::Apply(("pinned", 1)), key, update, gone);
        map.apply(&Event::Apply(("loose", 1)), key, update, gone);
        map.get_mut(&"pinned".into()).unwrap().1 = true;
        map.apply(&Event::Init, key, update, gone);
        map.apply(&Event::InitDone, key, update, gone);
        assert_eq!(map.get(&"pinned".into()), Some(&(None, true)), "kept, without what the watch said");
        assert_eq!(map.get(&"loose".into()), None);
        map.apply(&Event::Apply(("pinned", 3)), key, update, gone);
        map.apply(&Event::Delete(("pinned", 3)), key, update, gone);
        assert_eq!(map.get(&"pinned".into()), Some(&(None, true)));
    }
}
