//! The object store: one resourceVersion counter, a bounded event history for watches, and
//! the write pipeline every create, update, patch and delete goes through.

use crate::{
    crd,
    error::{ApiError, ApiResult, FieldError, FieldReason},
    events,
    fields::Scope,
    managed::{self, Writer},
    meta,
    policy::{self, Attributes, Operation, UserInfo},
    resource::{Registry, ResourceType},
    schema,
};
use base64::Engine;
use serde_json::{Value, json, value::RawValue};
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, OnceLock},
};
use tokio::sync::{Notify, broadcast};

/// Where an object lives: (group, plural, namespace, name); cluster objects have namespace "".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(rt: &ResourceType, namespace: &str, name: &str) -> Self {
        let namespace = if rt.namespaced { namespace } else { "" };
        Self { group: rt.group.clone(), plural: rt.plural.clone(), namespace: namespace.into(), name: name.into() }
    }
    fn of_namespace(name: &str) -> Self {
        Self { group: String::new(), plural: "namespaces".into(), namespace: String::new(), name: name.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// A version of an object as stored, with its JSON text, written once: lists and watches send
/// each version many times (a restart lists every object once for each watch of its kind), and
/// serialising it every time was most of the cost of a list. Reads as the object itself.
#[derive(Debug)]
pub struct Version {
    object: Value,
    json: Box<RawValue>,
    /// The text of its `PartialObjectMetadata` view, written when first asked for.
    metadata_json: OnceLock<Box<RawValue>>,
}

impl Version {
    pub fn new(object: Value) -> Arc<Self> {
        let json = serde_json::value::to_raw_value(&object).expect("a JSON document serialises");
        Arc::new(Self { object, json, metadata_json: OnceLock::new() })
    }

    /// The object as JSON text.
    pub fn json(&self) -> &RawValue {
        &self.json
    }

    /// Its `PartialObjectMetadata` view (what metadata-only lists and watches send) as JSON text.
    pub fn metadata_json(&self) -> &RawValue {
        self.metadata_json.get_or_init(|| {
            serde_json::value::to_raw_value(&crate::http::metadata_view(&self.object))
                .expect("a JSON document serialises")
        })
    }
}

impl std::ops::Deref for Version {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.object
    }
}

/// One change, as watchers see it; `old` lets a selector-filtered watch see objects leave.
/// Both are the versions stored, shared with the store and with the events next to this one.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    /// When it happened (watch lag counts from here).
    pub at: std::time::Instant,
    pub key: Key,
    pub kind: EventType,
    pub object: Arc<Version>,
    pub old: Option<Arc<Version>>,
}

pub struct State {
    rv: u64,
    pub registry: Registry,
    /// Each version is kept once, shared with the history's events that name it and with the
    /// pages of lists being written out: copies of it in the store, in its event and in the
    /// next event took a quarter of the server's memory at 30,000 Certificates, and copying a
    /// page's objects under the lock most of the time of a list.
    objects: BTreeMap<Key, Arc<Version>>,
    uids: HashMap<String, Key>,
    history: VecDeque<Arc<Event>>,
    /// Watches from a resourceVersion older than this get `410 Gone`.
    oldest_watchable: u64,
    /// Where the history of each custom resource (group, plural) starts: a real API server's
    /// watch cache of a kind begins when it starts serving it, so a watch of the kind from an
    /// older resourceVersion is `410 Gone` at once.
    kind_history_starts: HashMap<(String, String), u64>,
    history_limit: usize,
    events: broadcast::Sender<Arc<Event>>,
}

/// Shared handle to the state; the lock is never held across an await.
pub struct Store {
    state: Mutex<State>,
    pub gc_wakeup: Notify,
}

/// The server's first resourceVersion: anything older was "compacted" before it started, as on
/// a cluster that has been running for a while.
const FIRST_RESOURCE_VERSION: u64 = 1000;

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(16 * 1024);
        let mut state = State {
            rv: FIRST_RESOURCE_VERSION,
            registry: Registry::with_builtins(),
            objects: BTreeMap::new(),
            uids: HashMap::new(),
            history: VecDeque::new(),
            oldest_watchable: FIRST_RESOURCE_VERSION,
            kind_history_starts: HashMap::new(),
            history_limit,
            events,
        };
        for ns in ["default", "kube-system", "kube-public"] {
            let rt = state.registry.get("", "v1", "namespaces").expect("namespaces are built in");
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            state.create(&rt, "", obj, "kube-apiserver", &UserInfo::apiserver()).expect("default namespaces are valid");
        }
        crate::rbac::bootstrap(&mut state);
        state.oldest_watchable = state.rv;
        state.history.clear();
        Self { state: Mutex::new(state), gc_wakeup: Notify::new() }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Who owns the fields a patch wrote.
#[derive(Debug, Clone, Copy)]
pub enum Ownership<'a> {
    /// Server-side apply already recorded `managedFields`.
    Applied,
    /// A merge or JSON patch by this manager: it owns what it changed.
    Update(&'a str),
}

/// Who writes a patch: the ownership it records and the requesting user.
#[derive(Debug, Clone, Copy)]
pub struct PatchAuthor<'a> {
    pub ownership: Ownership<'a>,
    pub user: &'a UserInfo,
}

/// Options of a DELETE.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

impl State {
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> ApiResult<Value> {
        self.objects
            .get(&Key::new(rt, namespace, name))
            .map(|object| Value::clone(object))
            .ok_or_else(|| ApiError::not_found(&rt.qualified_name(), name))
    }

    /// The objects of a kind (in `namespace`, or all) after the object at `after` (namespace and
    /// name), in key order: a page of a paginated list starts where the last one ended, not
    /// by walking every object before it.
    pub fn list_after(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
    ) -> impl Iterator<Item = &Arc<Version>> {
        self.objects.range(kind_range(rt, namespace, after)).map(|(_, v)| v)
    }

    /// How many objects of a kind (in `namespace`, or all) come after the object at `after`,
    /// counted on the keys alone: the count of a page of a list without selectors, where
    /// every object matches.
    pub fn count_after(&self, rt: &ResourceType, namespace: Option<&str>, after: (&str, &str)) -> usize {
        self.objects.range(kind_range(rt, namespace, Some(after))).count()
    }

    pub fn list(&self, rt: &ResourceType, namespace: Option<&str>) -> Vec<&Arc<Version>> {
        let start =
            Key { group: rt.group.clone(), plural: rt.plural.clone(), namespace: String::new(), name: String::new() };
        self.objects
            .range(start..)
            .take_while(|(k, _)| k.group == rt.group && k.plural == rt.plural)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v)
            .collect()
    }

    /// History events after `rv`, or `None` when `rv` is older than what is kept of `rt`'s
    /// (410 Gone).
    pub fn events_since(&self, rv: u64, rt: &ResourceType) -> Option<Vec<Arc<Event>>> {
        let kind_start = self.kind_history_starts.get(&(rt.group.clone(), rt.plural.clone())).copied();
        let oldest = self.oldest_watchable.max(kind_start.unwrap_or_default());
        (rv >= oldest).then(|| self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Forgets the event history, so that every earlier resourceVersion is too old to watch from.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest_watchable = self.rv;
    }

    fn check_namespace(&self, rt: &ResourceType, namespace: &str) -> ApiResult<()> {
        if !rt.namespaced {
            return Ok(());
        }
        let ns = self
            .objects
            .get(&Key::of_namespace(namespace))
            .ok_or_else(|| ApiError::not_found("namespaces", namespace))?;
        if meta::is_deleting(ns) {
            return Err(ApiError::forbidden(format!(
                "{} is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                rt.qualified_name(),
            )));
        }
        Ok(())
    }

    pub fn create(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        mut obj: Value,
        manager: &str,
        user: &UserInfo,
    ) -> ApiResult<Value> {
        self.check_namespace(rt, namespace)?;
        assign_name(&mut obj);
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let key = Key::new(rt, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&rt.qualified_name(), &name));
        }
        let scope = main_scope(rt);
        obj["metadata"].as_object_mut().map(|m| m.remove("managedFields"));
        let mut obj = self.admit(rt, &key, None, obj, scope, user)?;
        record_update(rt, None, &mut obj, manager, scope);
        Ok(self.commit(rt, key, None, obj))
    }

    /// Replaces an object (PUT); `scope` says whether this is the main resource or `/status`.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        key: Key,
        obj: Value,
        scope: Scope,
        manager: &str,
        user: &UserInfo,
    ) -> ApiResult<Value> {
        let old =
            self.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(&rt.qualified_name(), &key.name))?;
        check_resource_version(rt, &key, &old, &obj, rt.custom)?;
        let mut new = self.admit(rt, &key, Some(&old), obj, scope, user)?;
        record_update(rt, Some(&old), &mut new, manager, scope);
        Ok(self.commit(rt, key, Some(&old), new))
    }

    /// Writes the result of a patch (already merged by the caller) with its field ownership.
    pub fn write_patched(
        &mut self,
        rt: &ResourceType,
        key: Key,
        old: Option<Value>,
        patched: Value,
        scope: Scope,
        author: PatchAuthor,
    ) -> ApiResult<Value> {
        let PatchAuthor { ownership, user } = author;
        if let Some(old) = &old {
            check_resource_version(rt, &key, old, &patched, false)?;
        } else {
            self.check_namespace(rt, &key.namespace)?;
        }
        let mut new = self.admit(rt, &key, old.as_ref(), patched, scope, user)?;
        if let Ownership::Update(manager) = ownership {
            record_update(rt, old.as_ref(), &mut new, manager, scope);
        }
        managed::retain_existing(&mut new);
        Ok(self.commit(rt, key, old.as_ref(), new))
    }

    pub fn object(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key).map(|version| &version.object)
    }

    /// Runs a write through the kind's strategy and admission: status/spec split, system
    /// fields, kind rules, metadata, schema and CEL, finalizer rules, generation, and last
    /// the validating admission policies.
    fn admit(
        &self,
        rt: &ResourceType,
        key: &Key,
        old: Option<&Value>,
        candidate: Value,
        scope: Scope,
        user: &UserInfo,
    ) -> ApiResult<Value> {
        let mut new = split_status(old, candidate, scope);
        set_identity(rt, key, &mut new);
        match old {
            Some(old) => carry_system_fields(old, &mut new),
            None => init_system_fields(rt, &mut new),
        }
        let mut errors = kind_rules(rt, old, &mut new)?;
        errors.extend(meta::validate(&new, rt.name_rule()));
        if let Some(old) = old {
            errors.extend(finalizer_rules(old, &new));
        }
        if let (Some(schema), true) = (&rt.schema, errors.is_empty()) {
            match schema::admit(schema, new, old) {
                Ok(admitted) => new = admitted,
                Err(schema_errors) => {
                    return Err(ApiError::invalid(&rt.qualified_kind(), &key.name, &schema_errors));
                }
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(&rt.qualified_kind(), &key.name, &errors));
        }
        if let (Some(old), true) = (old, rt.tracks_generation)
            && spec_of(old) != spec_of(&new)
        {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            new["metadata"]["generation"] = json!(generation);
        }
        let attrs = Attributes {
            rt,
            subresource: scope.subresource().unwrap_or(""),
            operation: if old.is_some() { Operation::Update } else { Operation::Create },
            namespace: &key.namespace,
            name: &key.name,
            object: Some(&new),
            old_object: old,
            user,
        };
        self.check_policies(&attrs)?;
        Ok(new)
    }

    /// Objects of one kind, in name order, without knowing its served type.
    pub fn objects_of(&self, group: &str, plural: &str) -> Vec<&Value> {
        let start = Key { group: group.into(), plural: plural.into(), namespace: String::new(), name: String::new() };
        self.objects
            .range(start..)
            .take_while(|(k, _)| k.group == group && k.plural == plural)
            .map(|(_, version)| &version.object)
            .collect()
    }

    /// The validating admission policies and their bindings, for one request.
    fn check_policies(&self, attrs: &Attributes) -> ApiResult<()> {
        let policies = self.objects_of(policy::GROUP, policy::POLICIES);
        if policies.is_empty() {
            return Ok(());
        }
        let bindings = self.objects_of(policy::GROUP, policy::BINDINGS);
        let namespace =
            (!attrs.namespace.is_empty()).then(|| self.object(&Key::of_namespace(attrs.namespace))).flatten();
        policy::admit(attrs, &policies, &bindings, namespace)
    }

    /// A write by a controller of the cluster (the garbage collector): admitted by the policies
    /// like any update, and skipped when they refuse it.
    fn controller_update(&mut self, rt: &ResourceType, key: Key, old: &Value, new: Value, user: &UserInfo) {
        let attrs = Attributes {
            rt,
            subresource: "",
            operation: Operation::Update,
            namespace: &key.namespace,
            name: &key.name,
            object: Some(&new),
            old_object: Some(old),
            user,
        };
        if self.check_policies(&attrs).is_ok() {
            self.commit(rt, key, Some(old), new);
        }
    }

    /// Stores a new version (or deletes the object when its last finalizer went away while
    /// deleting), bumps the resourceVersion and tells watchers. A write that changes nothing
    /// returns the stored object untouched, like the API server. `old` is the version stored
    /// (the lock is held from the read to here).
    fn commit(&mut self, rt: &ResourceType, key: Key, old: Option<&Value>, mut new: Value) -> Value {
        if let Some(old) = old {
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            if *old == new {
                return new;
            }
        }
        // A namespace is held by its `spec.finalizers` until its content is gone (see
        // `finalize_namespaces`), not by metadata finalizers.
        let namespace = key.group.is_empty() && key.plural == "namespaces";
        if old.is_some() && meta::is_deleting(&new) && meta::finalizers(&new).is_empty() && !namespace {
            return self.remove(key, new);
        }
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let kind = if old.is_some() { EventType::Modified } else { EventType::Added };
        if let Some(uid) = new["metadata"]["uid"].as_str() {
            self.uids.insert(uid.to_string(), key.clone());
        }
        let stored = Version::new(new);
        // The version replaced is `old` itself: the event shares it rather than a copy.
        let replaced = self.objects.insert(key.clone(), stored.clone());
        self.after_commit(rt, &stored);
        let written = Value::clone(&stored);
        self.emit(key, kind, stored, replaced);
        written
    }

    fn remove(&mut self, key: Key, mut last: Value) -> Value {
        self.objects.remove(&key);
        if let Some(uid) = last["metadata"]["uid"].as_str() {
            self.uids.remove(uid);
        }
        self.rv += 1;
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if key.group == "apiextensions.k8s.io" {
            self.unregister_crd(&last);
        }
        self.emit(key, EventType::Deleted, Version::new(last.clone()), None);
        last
    }

    fn emit(&mut self, key: Key, kind: EventType, object: Arc<Version>, old: Option<Arc<Version>>) {
        let event = Arc::new(Event { rv: self.rv, at: std::time::Instant::now(), key, kind, object, old });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_watchable = dropped.rv;
            }
        }
        let _ = self.events.send(event);
    }

    /// Serves a CRD's resources as soon as it is stored, and reports it established.
    fn after_commit(&mut self, rt: &ResourceType, object: &Value) {
        if rt.group != "apiextensions.k8s.io" {
            return;
        }
        let Ok(served) = Registry::from_crd(object) else {
            return;
        };
        self.kind_history_starts.entry((served.group.clone(), served.plural.clone())).or_insert(self.rv);
        self.registry.insert(served);
        if object["status"]["conditions"].is_array() {
            return;
        }
        let mut established = object.clone();
        established["status"] = json!({
            "acceptedNames": object["spec"]["names"],
            "storedVersions": object["spec"]["versions"].as_array().into_iter().flatten()
                .filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>(),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": meta::now()},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": meta::now()},
            ],
        });
        let key = Key::new(rt, "", object["metadata"]["name"].as_str().unwrap_or_default());
        self.commit(rt, key, Some(object), established);
    }

    fn unregister_crd(&mut self, crd: &Value) {
        let Ok(served) = Registry::from_crd(crd) else {
            return;
        };
        let keys: Vec<Key> =
            self.objects.keys().filter(|k| k.group == served.group && k.plural == served.plural).cloned().collect();
        for key in keys {
            if let Some(obj) = self.object(&key).cloned() {
                self.remove(key, obj);
            }
        }
        self.kind_history_starts.remove(&(served.group.clone(), served.plural.clone()));
        self.registry.remove(&served.group, &served.plural);
    }

    /// DELETE: finalizers turn it into setting `deletionTimestamp`; otherwise the object goes.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        key: Key,
        opts: &DeleteOptions,
        user: &UserInfo,
    ) -> ApiResult<(Value, bool)> {
        let old = self.object(&key).cloned().ok_or_else(|| ApiError::not_found(&rt.qualified_name(), &key.name))?;
        check_preconditions(rt, &key, &old, opts)?;
        self.check_policies(&Attributes {
            rt,
            subresource: "",
            operation: Operation::Delete,
            namespace: &key.namespace,
            name: &key.name,
            object: None,
            old_object: Some(&old),
            user,
        })?;
        let uid = old["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        if opts.propagation.as_deref() == Some("Orphan") {
            self.orphan_dependents(&uid);
        }
        let mut new = old.clone();
        if opts.propagation.as_deref() == Some("Foreground")
            && !meta::finalizers(&new).contains(&"foregroundDeletion".to_string())
        {
            let mut finalizers = meta::finalizers(&new);
            finalizers.push("foregroundDeletion".into());
            new["metadata"]["finalizers"] = json!(finalizers);
        }
        if rt.plural == "namespaces" && rt.group.is_empty() {
            new["status"]["phase"] = json!("Terminating");
        }
        let blocked = !meta::finalizers(&new).is_empty() || rt.plural == "namespaces" && rt.group.is_empty();
        if !blocked {
            return Ok((self.remove(key, old), true));
        }
        if !meta::is_deleting(&new) {
            new["metadata"]["deletionTimestamp"] = json!(meta::now());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if rt.tracks_generation {
                new["metadata"]["generation"] = json!(old["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
            }
        }
        Ok((self.commit(rt, key, Some(&old), new), false))
    }

    fn orphan_dependents(&mut self, owner_uid: &str) {
        let dependents: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, v)| owner_refs(v).iter().any(|r| r["uid"] == owner_uid))
            .map(|(k, _)| k.clone())
            .collect();
        for key in dependents {
            self.rewrite_owner_refs(&key, |r| r["uid"] != owner_uid);
        }
    }

    fn rewrite_owner_refs(&mut self, key: &Key, keep: impl Fn(&Value) -> bool) {
        let Some(old) = self.objects.get(key).cloned() else {
            return;
        };
        let Ok(rt) = self.type_of(key) else { return };
        let mut new = Value::clone(&old);
        let refs: Vec<Value> = owner_refs(&old).into_iter().filter(|r| keep(r)).collect();
        if refs.is_empty() {
            new["metadata"].as_object_mut().map(|m| m.remove("ownerReferences"));
        } else {
            new["metadata"]["ownerReferences"] = json!(refs);
        }
        self.controller_update(&rt, key.clone(), &old, new, &UserInfo::garbage_collector());
    }

    fn type_of(&self, key: &Key) -> ApiResult<Arc<ResourceType>> {
        self.registry
            .all()
            .find(|rt| rt.group == key.group && rt.plural == key.plural)
            .cloned()
            .ok_or_else(|| ApiError::internal("unknown kind"))
    }

    /// One pass of the garbage collector and the namespace finalizer. Returns whether it
    /// changed anything (so the caller runs it again until the cluster is settled).
    pub fn collect_garbage(&mut self) -> bool {
        let before = self.rv;
        self.finalize_namespaces();
        self.delete_orphans();
        self.finish_foreground_deletions();
        self.rv != before
    }

    fn finalize_namespaces(&mut self) {
        let terminating: Vec<String> = self
            .objects
            .iter()
            .filter(|(k, v)| k.group.is_empty() && k.plural == "namespaces" && meta::is_deleting(v))
            .map(|(k, _)| k.name.clone())
            .collect();
        for ns in terminating {
            let content: Vec<Key> = self.objects.keys().filter(|k| k.namespace == ns).cloned().collect();
            if content.is_empty() {
                if let Some(obj) = self.object(&Key::of_namespace(&ns)).cloned() {
                    self.remove(Key::of_namespace(&ns), obj);
                }
                continue;
            }
            for key in content {
                let deleting = self.object(&key).is_some_and(meta::is_deleting);
                if let (false, Ok(rt)) = (deleting, self.type_of(&key)) {
                    let _ = self.delete(&rt, key, &DeleteOptions::default(), &UserInfo::namespace_controller());
                }
            }
        }
    }

    fn owner_exists(&self, dependent: &Key, owner_ref: &Value) -> bool {
        owner_ref["uid"]
            .as_str()
            .and_then(|uid| self.uids.get(uid))
            .is_some_and(|owner| owner.namespace.is_empty() || owner.namespace == dependent.namespace)
    }

    fn delete_orphans(&mut self) {
        let mut doomed = Vec::new();
        let mut dangling = Vec::new();
        for (key, obj) in &self.objects {
            let refs = owner_refs(obj);
            if refs.is_empty() {
                continue;
            }
            let alive = refs.iter().filter(|r| self.owner_exists(key, r)).count();
            if alive == 0 && !meta::is_deleting(obj) {
                doomed.push(key.clone());
            } else if alive > 0 && alive < refs.len() {
                dangling.push(key.clone());
            }
        }
        for key in doomed {
            if let Ok(rt) = self.type_of(&key) {
                let _ = self.delete(&rt, key, &DeleteOptions::default(), &UserInfo::garbage_collector());
            }
        }
        for key in dangling {
            let live: Vec<String> = owner_refs(&self.objects[&key])
                .iter()
                .filter(|r| self.owner_exists(&key, r))
                .filter_map(|r| r["uid"].as_str().map(String::from))
                .collect();
            self.rewrite_owner_refs(&key, |r| r["uid"].as_str().is_some_and(|u| live.iter().any(|l| l == u)));
        }
    }

    fn finish_foreground_deletions(&mut self) {
        let owners: Vec<(Key, String)> = self
            .objects
            .iter()
            .filter(|(_, v)| meta::is_deleting(v) && meta::finalizers(v).iter().any(|f| f == "foregroundDeletion"))
            .map(|(k, v)| (k.clone(), v["metadata"]["uid"].as_str().unwrap_or_default().to_string()))
            .collect();
        for (owner, uid) in owners {
            let dependents: Vec<Key> = self
                .objects
                .iter()
                .filter(|(_, v)| owner_refs(v).iter().any(|r| r["uid"] == uid.as_str()))
                .map(|(k, _)| k.clone())
                .collect();
            if dependents.is_empty() {
                let Some(old) = self.objects.get(&owner).cloned() else {
                    continue;
                };
                let mut new = Value::clone(&old);
                let rest: Vec<String> =
                    meta::finalizers(&old).into_iter().filter(|f| f != "foregroundDeletion").collect();
                new["metadata"]["finalizers"] = json!(rest);
                if let Ok(rt) = self.type_of(&owner) {
                    self.controller_update(&rt, owner, &old, new, &UserInfo::garbage_collector());
                }
                continue;
            }
            for key in dependents {
                let deleting = self.object(&key).is_some_and(meta::is_deleting);
                if let (false, Ok(rt)) = (deleting, self.type_of(&key)) {
                    let _ = self.delete(&rt, key, &DeleteOptions::default(), &UserInfo::garbage_collector());
                }
            }
        }
    }
}

/// The keys of a kind's objects (in `namespace`, or all) after the object at `after`, in key
/// order. The end is the first key past them: a namespace (or plural) with a NUL appended
/// sorts after every key that has it and before every other key that follows.
fn kind_range(
    rt: &ResourceType,
    namespace: Option<&str>,
    after: Option<(&str, &str)>,
) -> (std::ops::Bound<Key>, std::ops::Bound<Key>) {
    use std::ops::Bound::{Excluded, Included};
    let key = |plural: String, namespace: &str, name: &str| Key {
        group: rt.group.clone(),
        plural,
        namespace: namespace.into(),
        name: name.into(),
    };
    let start = match after {
        Some((ns, name)) => Excluded(key(rt.plural.clone(), ns, name)),
        None => Included(key(rt.plural.clone(), namespace.unwrap_or(""), "")),
    };
    let end = match namespace {
        Some(ns) => key(rt.plural.clone(), &format!("{ns}\0"), ""),
        None => key(format!("{}\0", rt.plural), "", ""),
    };
    (start, Excluded(end))
}

fn owner_refs(obj: &Value) -> Vec<Value> {
    obj["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default()
}

fn main_scope(rt: &ResourceType) -> Scope {
    if rt.status_subresource { Scope::MainResource } else { Scope::Whole }
}

fn record_update(rt: &ResourceType, old: Option<&Value>, new: &mut Value, manager: &str, scope: Scope) {
    let api_version = new["apiVersion"].as_str().unwrap_or_default().to_string();
    managed::record_update(rt, old, new, &Writer { manager, api_version: &api_version, scope });
}

/// `generateName` gets five random characters, as the API server does.
fn assign_name(obj: &mut Value) {
    let has_name = obj["metadata"]["name"].as_str().is_some_and(|n| !n.is_empty());
    if let (false, Some(prefix)) = (has_name, obj["metadata"]["generateName"].as_str()) {
        let suffix: String =
            uuid::Uuid::new_v4().simple().to_string().chars().filter(|c| c.is_ascii_alphanumeric()).take(5).collect();
        obj["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
    }
}

fn check_resource_version(rt: &ResourceType, key: &Key, old: &Value, new: &Value, required: bool) -> ApiResult<()> {
    match new["metadata"]["resourceVersion"].as_str().filter(|rv| !rv.is_empty()) {
        Some(rv) if Some(rv) != old["metadata"]["resourceVersion"].as_str() => {
            Err(ApiError::stale(&rt.qualified_name(), &key.name))
        }
        None if required => Err(ApiError::invalid(
            &rt.qualified_kind(),
            &key.name,
            &[FieldError::invalid("metadata.resourceVersion", &json!("0x0"), "must be specified for an update")],
        )),
        _ => Ok(()),
    }
}

fn check_preconditions(rt: &ResourceType, key: &Key, obj: &Value, opts: &DeleteOptions) -> ApiResult<()> {
    let meta = &obj["metadata"];
    if let Some(uid) = &opts.precondition_uid
        && meta["uid"].as_str() != Some(uid)
    {
        let why = format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta["uid"].as_str().unwrap_or("")
        );
        return Err(ApiError::conflict(&rt.qualified_name(), &key.name, &why));
    }
    if let Some(rv) = &opts.precondition_rv
        && meta["resourceVersion"].as_str() != Some(rv)
    {
        let why = format!(
            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
            meta["resourceVersion"].as_str().unwrap_or("")
        );
        return Err(ApiError::conflict(&rt.qualified_name(), &key.name, &why));
    }
    Ok(())
}

/// The status subresource strategy: main-resource writes keep the stored status (none on
/// create), `/status` writes keep everything but status (and managedFields) from storage.
fn split_status(old: Option<&Value>, mut candidate: Value, scope: Scope) -> Value {
    match scope {
        Scope::Whole => candidate,
        Scope::MainResource => {
            match old.and_then(|o| o.get("status")) {
                Some(status) => candidate["status"] = status.clone(),
                None => {
                    candidate.as_object_mut().map(|m| m.remove("status"));
                }
            }
            candidate
        }
        Scope::Status => {
            let Some(old) = old else { return candidate };
            let mut new = old.clone();
            match candidate.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    new.as_object_mut().map(|m| m.remove("status"));
                }
            }
            new["metadata"]["managedFields"] = candidate["metadata"]["managedFields"].clone();
            new["metadata"]["resourceVersion"] = candidate["metadata"]["resourceVersion"].clone();
            if new["metadata"]["managedFields"].is_null() {
                new["metadata"].as_object_mut().map(|m| m.remove("managedFields"));
            }
            new
        }
    }
}

fn set_identity(rt: &ResourceType, key: &Key, obj: &mut Value) {
    if !obj.is_object() {
        *obj = json!({});
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["name"] = json!(key.name);
    if rt.namespaced {
        obj["metadata"]["namespace"] = json!(key.namespace);
    } else {
        obj["metadata"].as_object_mut().map(|m| m.remove("namespace"));
    }
    let version =
        obj["apiVersion"].as_str().and_then(|av| av.rsplit('/').next()).unwrap_or(&rt.versions[0]).to_string();
    let version = if rt.versions.contains(&version) { version } else { rt.versions[0].clone() };
    obj["apiVersion"] = json!(rt.api_version(&version));
    obj["kind"] = json!(rt.kind);
}

fn carry_system_fields(old: &Value, new: &mut Value) {
    for field in meta::SYSTEM_FIELDS {
        match old["metadata"].get(field) {
            Some(v) => new["metadata"][field] = v.clone(),
            None => {
                new["metadata"].as_object_mut().map(|m| m.remove(field));
            }
        }
    }
}

fn init_system_fields(rt: &ResourceType, obj: &mut Value) {
    let meta = obj["metadata"].as_object_mut().expect("metadata is an object");
    for field in ["deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "generation"] {
        meta.remove(field);
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(meta::now()));
    if rt.tracks_generation {
        meta.insert("generation".into(), json!(1));
    }
}

/// Everything except metadata and status: what `generation` tracks.
fn spec_of(obj: &Value) -> Value {
    let mut rest = obj.clone();
    if let Some(map) = rest.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    rest
}

/// No new finalizers may be added to an object that is being deleted.
fn finalizer_rules(old: &Value, new: &Value) -> Vec<FieldError> {
    if !meta::is_deleting(old) {
        return Vec::new();
    }
    let before = meta::finalizers(old);
    meta::finalizers(new)
        .into_iter()
        .filter(|f| !before.contains(f))
        .map(|f| {
            FieldError::new(
                "metadata.finalizers",
                FieldReason::Forbidden,
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers [\"{f}\"]"
                ),
            )
        })
        .collect()
}

/// Rules of particular built-in kinds (Secrets, Namespaces, CRDs).
fn kind_rules(rt: &ResourceType, old: Option<&Value>, new: &mut Value) -> ApiResult<Vec<FieldError>> {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "secrets") => secret_rules(old, new),
        ("", "namespaces") => {
            // The API server labels every namespace with its own name.
            let name = new["metadata"]["name"].clone();
            if !new["metadata"]["labels"].is_object() {
                new["metadata"]["labels"] = json!({});
            }
            new["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            if new["spec"]["finalizers"].is_null() {
                new["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            if new["status"]["phase"].is_null() {
                new["status"] = json!({"phase": "Active"});
            }
            Ok(Vec::new())
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => Ok(crd::validate(new, old)),
        ("events.k8s.io", "events") => {
            let face = if rt.core_face { events::Face::Core } else { events::Face::EventsV1 };
            Ok(events::validate(new, old, face))
        }
        (policy::GROUP, policy::POLICIES) => Ok(policy::admit_policy(new)),
        (policy::GROUP, policy::BINDINGS) => Ok(policy::admit_binding(new)),
        _ => Ok(Vec::new()),
    }
}

fn secret_rules(old: Option<&Value>, new: &mut Value) -> ApiResult<Vec<FieldError>> {
    let engine = base64::engine::general_purpose::STANDARD;
    if let Some(string_data) = new.as_object_mut().and_then(|m| m.remove("stringData")) {
        for (k, v) in string_data.as_object().into_iter().flatten() {
            new["data"][k] = json!(engine.encode(v.as_str().unwrap_or_default()));
        }
    }
    for (k, v) in new["data"].as_object().into_iter().flatten() {
        let valid = v.as_str().is_some_and(|s| engine.decode(s).is_ok());
        if !valid {
            return Err(ApiError::bad_request(format!(
                "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data[{k}]"
            )));
        }
    }
    if new["type"].is_null() {
        new["type"] = json!("Opaque");
    }
    let mut errors = Vec::new();
    if new["type"] == "kubernetes.io/tls" {
        for required in ["tls.crt", "tls.key"] {
            if new["data"].get(required).is_none() {
                errors.push(FieldError::new(format!("data[{required}]"), FieldReason::Required, ""));
            }
        }
    }
    if let Some(old) = old {
        if old["type"] != new["type"] {
            errors.push(FieldError::invalid("type", &new["type"], "field is immutable"));
        }
        if old["immutable"] == true && (old["data"] != new["data"] || new["immutable"] != true) {
            errors.push(FieldError::new("data", FieldReason::Forbidden, "field is immutable when `immutable` is set"));
        }
    }
    Ok(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `namespace/name` of each object.
    fn names<'a>(objects: impl Iterator<Item = &'a Arc<Version>>) -> Vec<String> {
        let name = |o: &Value, field: &str| o["metadata"][field].as_str().unwrap_or_default().to_string();
        objects.map(|o| format!("{}/{}", name(o, "namespace"), name(o, "name"))).collect()
    }

    #[test]
    fn a_version_reads_as_its_object_and_writes_the_text_it_was_stored_with() {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"a": "b"}}, "data": {"k": "v"}});
        let version = Version::new(object.clone());
        assert_eq!(**version, object);
        assert_eq!(version.json().get(), serde_json::to_string(&object).unwrap());
        let view: Value = serde_json::from_str(version.metadata_json().get()).unwrap();
        assert_eq!(view, crate::http::metadata_view(&object));
        assert!(view.get("data").is_none(), "a metadata view holds no data: {view}");
    }

    #[test]
    fn a_page_holds_its_kind_and_namespace_only_even_beside_names_that_extend_them() {
        let store = Store::new(100);
        let mut state = store.lock();
        let user = UserInfo::admin();
        let namespaces = state.registry.get("", "v1", "namespaces").unwrap();
        for ns in ["a", "a-b", "ab"] {
            let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            state.create(&namespaces, "", namespace, "test", &user).unwrap();
        }
        let (config_maps, secrets) =
            (state.registry.get("", "v1", "configmaps").unwrap(), state.registry.get("", "v1", "secrets").unwrap());
        for (ns, name) in [("a", "x"), ("a", "y"), ("a", "z"), ("a-b", "x"), ("ab", "x")] {
            let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
            state.create(&config_maps, ns, object, "test", &user).unwrap();
        }
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
        state.create(&secrets, "a", secret, "test", &user).unwrap();

        assert_eq!(names(state.list_after(&config_maps, Some("a"), None)), ["a/x", "a/y", "a/z"]);
        assert_eq!(names(state.list_after(&config_maps, Some("a"), Some(("a", "x")))), ["a/y", "a/z"]);
        assert_eq!(state.count_after(&config_maps, Some("a"), ("a", "x")), 2);
        assert_eq!(state.count_after(&config_maps, Some("a"), ("a", "z")), 0);
        let everywhere: Vec<_> = names(state.list_after(&config_maps, None, Some(("a", "z"))));
        assert_eq!(everywhere[..2], ["a-b/x", "ab/x"]);
        assert!(everywhere.iter().all(|n| !n.ends_with("/s")), "no Secret among ConfigMaps: {everywhere:?}");
        assert_eq!(state.count_after(&config_maps, None, ("a", "z")), everywhere.len());
        assert_eq!(names(state.list_after(&secrets, Some("a"), None)), ["a/s"]);
    }
}
