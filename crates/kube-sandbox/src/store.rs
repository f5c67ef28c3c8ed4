//! The object store: every object of every kind, one global resourceVersion, and the event log
//! that watches replay from.
//!
//! Objects are kept as JSON values behind `Arc` so lists and watch fan-out share them without
//! copying. All mutation happens under one mutex, held only for map operations (never across an
//! await), which gives the linearisable resourceVersion order Kubernetes promises.

use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::resources::{RESOURCES, ResourceInfo};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, watch};

/// How many past events a watch may resume from before it gets 410 Gone.
const EVENT_LOG_LEN: usize = 50_000;

/// A watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug)]
pub struct WatchEvent {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// The kind of the object.
    pub resource: &'static ResourceInfo,
    /// What happened.
    pub event_type: EventType,
    /// The object after the change (before it, for deletions, with the new resourceVersion).
    pub object: Arc<Value>,
    /// The object before a modification (watch filters turn selector transitions into
    /// ADDED/DELETED with it).
    pub previous: Option<Arc<Value>>,
}

type Key = (String, String);

struct Inner {
    rv: u64,
    tables: Vec<BTreeMap<Key, Arc<Value>>>,
    /// Per kind (as `tables`), the resourceVersion of its last change.
    changed_at: Vec<u64>,
    log: VecDeque<Arc<WatchEvent>>,
}

/// The sandbox's object store.
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    changed: watch::Sender<u64>,
}

/// What a watch starts with: events to send first, then the live receiver.
pub struct Subscription {
    /// Events to send before live ones (replayed or synthesised ADDED).
    pub backlog: Vec<Arc<WatchEvent>>,
    /// Live events, all with resourceVersion above the backlog's.
    pub live: broadcast::Receiver<Arc<WatchEvent>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(16_384);
        let (changed, _) = watch::channel(0);
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                tables: RESOURCES.iter().map(|_| BTreeMap::new()).collect(),
                changed_at: RESOURCES.iter().map(|_| 0).collect(),
                log: VecDeque::new(),
            }),
            events,
            changed,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves maps consistent (each operation is one insert
        // or remove), so recovering from poisoning is safe.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that changes whenever any object changes (controllers wait on it).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// One object.
    pub fn get(&self, res: &'static ResourceInfo, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.lock().tables[res.index()]
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects of a kind, in one namespace (`Some`) or all, sorted by namespace and name,
    /// starting after `after` (a continue key); and the resourceVersion of the snapshot.
    pub fn list(
        &self,
        res: &'static ResourceInfo,
        ns: Option<&str>,
        after: Option<&(String, String)>,
    ) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let table = &inner.tables[res.index()];
        let start = match (after, ns) {
            (Some(k), _) => std::ops::Bound::Excluded(k.clone()),
            (None, Some(ns)) => std::ops::Bound::Included((ns.to_string(), String::new())),
            (None, None) => std::ops::Bound::Unbounded,
        };
        let items = table
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|((k_ns, _), _)| ns.is_none_or(|n| n == k_ns))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// The resourceVersion of the last change to an object of `res` (0: none yet).
    pub fn last_change(&self, res: &'static ResourceInfo) -> u64 {
        self.lock().changed_at[res.index()]
    }

    /// Whether an object of a kind other than `except` changed after resourceVersion `rv`.
    pub fn changed_since_except(&self, rv: u64, except: &'static ResourceInfo) -> bool {
        let skip = except.index();
        let inner = self.lock();
        inner
            .changed_at
            .iter()
            .enumerate()
            .any(|(i, at)| i != skip && *at > rv)
    }

    /// Forgets past events, as an etcd compaction does: a watch from an older resourceVersion
    /// gets 410 Gone (clients then list again). Bulk seeding uses it so that a burst of events
    /// nobody watched does not keep every replaced object version alive.
    pub fn drop_history(&self) {
        self.lock().log.clear();
    }

    /// What changed after resourceVersion `rv`, or `None` when the event log no longer
    /// reaches back that far.
    pub fn changes_since(&self, rv: u64) -> Option<Changes> {
        let inner = self.lock();
        let oldest = inner.log.front().map_or(inner.rv + 1, |e| e.rv);
        if rv + 1 < oldest && rv < inner.rv {
            return None;
        }
        let mut changes = Changes::default();
        for ev in inner.log.iter().rev().take_while(|e| e.rv > rv) {
            if ev.resource.namespaced {
                let ns = meta::namespace(&ev.object);
                if !changes.namespaces.contains(ns) {
                    changes.namespaces.insert(ns.to_string());
                }
            } else if !changes
                .cluster_kinds
                .iter()
                .any(|k| std::ptr::eq(*k, ev.resource))
            {
                changes.cluster_kinds.push(ev.resource);
            }
        }
        Some(changes)
    }

    fn commit(
        &self,
        inner: &mut Inner,
        res: &'static ResourceInfo,
        t: EventType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let ev = Arc::new(WatchEvent {
            rv: inner.rv,
            resource: res,
            event_type: t,
            object,
            previous,
        });
        if inner.log.len() >= EVENT_LOG_LEN {
            inner.log.pop_front();
        }
        inner.log.push_back(ev.clone());
        inner.changed_at[res.index()] = inner.rv;
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(ev);
        self.changed.send_replace(inner.rv);
    }

    /// Stores a new object, stamping uid, resourceVersion, creationTimestamp and generation.
    pub fn create(&self, res: &'static ResourceInfo, mut obj: Value) -> ApiResult<Arc<Value>> {
        let key = (
            meta::namespace(&obj).to_string(),
            meta::name(&obj).to_string(),
        );
        let mut inner = self.lock();
        if inner.tables[res.index()].contains_key(&key) {
            return Err(ApiError::already_exists(&res.qualified_plural(), &key.1));
        }
        inner.rv += 1;
        let md = &mut obj["metadata"];
        // Admission may pre-assign the uid (Jobs put it in their selector); keep it then.
        if !md.get("uid").is_some_and(Value::is_string) {
            md["uid"] = meta::new_uid().into();
        }
        md["resourceVersion"] = inner.rv.to_string().into();
        if md.get("creationTimestamp").is_none_or(Value::is_null) {
            md["creationTimestamp"] = meta::now().into();
        }
        if obj.get("spec").is_some() {
            obj["metadata"]["generation"] = 1.into();
        }
        let obj = Arc::new(obj);
        inner.tables[res.index()].insert(key, obj.clone());
        self.commit(&mut inner, res, EventType::Added, obj.clone(), None);
        Ok(obj)
    }

    /// Replaces an object. `expected_rv` (when set) must equal the stored resourceVersion.
    /// Identity fields (uid, creationTimestamp) are kept; generation moves when spec changes.
    /// An object marked for deletion whose finalizers are all gone is removed instead.
    pub fn update(
        &self,
        res: &'static ResourceInfo,
        mut obj: Value,
        expected_rv: Option<&str>,
    ) -> ApiResult<Arc<Value>> {
        let key = (
            meta::namespace(&obj).to_string(),
            meta::name(&obj).to_string(),
        );
        let mut inner = self.lock();
        let Some(old) = inner.tables[res.index()].get(&key).cloned() else {
            return Err(ApiError::not_found(&res.qualified_plural(), &key.1));
        };
        let old_rv = meta::str_at(&old, "/metadata/resourceVersion");
        if expected_rv.is_some_and(|rv| !rv.is_empty() && rv != old_rv) {
            return Err(ApiError::conflict(&res.qualified_plural(), &key.1));
        }
        for field in ["uid", "creationTimestamp"] {
            obj["metadata"][field] = old["metadata"][field].clone();
        }
        if meta::is_deleting(&old) {
            obj["metadata"]["deletionTimestamp"] = old["metadata"]["deletionTimestamp"].clone();
        }
        let generation = old.pointer("/metadata/generation").and_then(Value::as_i64);
        if let Some(g) = generation {
            let bumped = if old.get("spec") != obj.get("spec") {
                g + 1
            } else {
                g
            };
            obj["metadata"]["generation"] = bumped.into();
        }
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if *old == obj {
            return Ok(old);
        }
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = inner.rv.to_string().into();
        let finalizers_empty = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        let obj = Arc::new(obj);
        if meta::is_deleting(&obj) && finalizers_empty {
            inner.tables[res.index()].remove(&key);
            self.commit(&mut inner, res, EventType::Deleted, obj.clone(), None);
        } else {
            inner.tables[res.index()].insert(key, obj.clone());
            self.commit(&mut inner, res, EventType::Modified, obj.clone(), Some(old));
        }
        Ok(obj)
    }

    /// Reads, changes with `f`, and writes back one object; writes nothing when `f` changes
    /// nothing. A concurrent write makes it re-read and re-apply `f` (a few times), so
    /// controllers can update status without losing others' changes.
    pub fn modify(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        mut f: impl FnMut(&mut Value) -> ApiResult<()>,
    ) -> ApiResult<Arc<Value>> {
        let mut attempts = 0;
        loop {
            let current = self
                .get(res, ns, name)
                .ok_or_else(|| ApiError::not_found(&res.qualified_plural(), name))?;
            let mut next = (*current).clone();
            f(&mut next)?;
            if next == *current {
                return Ok(current);
            }
            let rv = meta::str_at(&current, "/metadata/resourceVersion").to_string();
            match self.update(res, next, Some(&rv)) {
                Err(e) if e.code == 409 && attempts < 8 => attempts += 1,
                other => return other,
            }
        }
    }

    /// Removes an object at once, returning it with the deletion's resourceVersion.
    pub fn delete(&self, res: &'static ResourceInfo, ns: &str, name: &str) -> Option<Arc<Value>> {
        let key = (ns.to_string(), name.to_string());
        let mut inner = self.lock();
        let old = inner.tables[res.index()].remove(&key)?;
        inner.rv += 1;
        let mut obj = (*old).clone();
        obj["metadata"]["resourceVersion"] = inner.rv.to_string().into();
        let obj = Arc::new(obj);
        self.commit(&mut inner, res, EventType::Deleted, obj.clone(), None);
        Some(obj)
    }

    /// Starts a watch of one kind. With `from_rv` = None every current object is sent first as
    /// ADDED; otherwise the events after `from_rv` are replayed (410 when they are no longer
    /// kept).
    pub fn subscribe(
        &self,
        res: &'static ResourceInfo,
        from_rv: Option<u64>,
    ) -> ApiResult<Subscription> {
        let inner = self.lock();
        let live = self.events.subscribe();
        let backlog = match from_rv {
            None => inner.tables[res.index()]
                .values()
                .map(|o| {
                    Arc::new(WatchEvent {
                        rv: inner.rv,
                        resource: res,
                        event_type: EventType::Added,
                        object: o.clone(),
                        previous: None,
                    })
                })
                .collect(),
            Some(rv) => {
                let oldest = inner.log.front().map(|e| e.rv).unwrap_or(inner.rv + 1);
                if rv + 1 < oldest && rv < inner.rv {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        oldest - 1
                    )));
                }
                inner
                    .log
                    .iter()
                    .filter(|e| e.rv > rv && std::ptr::eq(e.resource, res))
                    .cloned()
                    .collect()
            }
        };
        Ok(Subscription { backlog, live })
    }
}

/// What changed in the store after some resourceVersion (see [`Store::changes_since`]).
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Namespaces in which a namespaced object changed.
    pub namespaces: BTreeSet<String>,
    /// Cluster-scoped kinds of which an object changed.
    pub cluster_kinds: Vec<&'static ResourceInfo>,
}

/// Decides when a level-triggered loop (the controllers, the kubelet) runs its next pass.
///
/// A store change wakes the loop, but a change to Events alone does not start a pass: no loop
/// reads Events, and a pass that keeps failing records (or bumps) one every time, so passing
/// again at once would spin. The periodic tick starts a pass when anything at all changed since
/// the last pass began (failures are retried at the tick's pace, as before), and nothing in a
/// settled cluster, whose passes would find nothing to do. A loop whose last pass left work
/// waiting on something outside the store (the kubelet: a pod held by an injected fault) asks
/// for every tick with [`PassGate::retry_on_tick`].
#[derive(Debug, Default)]
pub struct PassGate {
    /// The store's resourceVersion when the last pass began (`None`: no pass yet).
    last_pass: Option<u64>,
    /// Whether every tick starts a pass, changes or not.
    retry: bool,
}

/// A pass the [`PassGate`] let through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassStart {
    /// The resourceVersion at which the previous pass began (`None`: this is the first pass);
    /// what changed since then is all this pass can find to do.
    pub previous: Option<u64>,
}

impl PassGate {
    /// Whether to pass now (`tick`: woken by the periodic tick, not by a change); when it says
    /// yes, the pass counts as begun.
    pub fn begin(&mut self, store: &Store, tick: bool) -> Option<PassStart> {
        let rv = store.resource_version();
        let due = match self.last_pass {
            None => true,
            Some(last) if tick => self.retry || rv > last,
            Some(last) => store.changed_since_except(last, crate::resources::known::events()),
        };
        due.then(|| PassStart {
            previous: self.last_pass.replace(rv),
        })
    }

    /// Whether every tick should start a pass (until told otherwise), whatever changed.
    pub fn retry_on_tick(&mut self, retry: bool) {
        self.retry = retry;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::known;
    use serde_json::json;

    fn cm(ns: &str, name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}})
    }

    #[test]
    fn create_stamps_identity_and_refuses_duplicates() {
        let s = Store::new();
        let a = s.create(known::config_maps(), cm("x", "a")).unwrap();
        assert_eq!(meta::uid(&a).len(), 36);
        let err = s.create(known::config_maps(), cm("x", "a")).unwrap_err();
        assert_eq!((err.code, err.reason), (409, "AlreadyExists"));
    }

    #[test]
    fn update_with_stale_resource_version_conflicts() {
        let s = Store::new();
        let a = s.create(known::config_maps(), cm("x", "a")).unwrap();
        let rv = meta::str_at(&a, "/metadata/resourceVersion").to_string();
        let mut b = (*a).clone();
        b["data"] = json!({"k": "v"});
        s.update(known::config_maps(), b.clone(), Some(&rv))
            .unwrap();
        assert_eq!(
            s.update(known::config_maps(), b, Some(&rv))
                .unwrap_err()
                .code,
            409
        );
    }

    #[test]
    fn list_is_scoped_to_a_namespace_and_resumes_after_a_key() {
        let s = Store::new();
        for (ns, n) in [("a", "1"), ("b", "1"), ("b", "2"), ("c", "1")] {
            s.create(known::config_maps(), cm(ns, n)).unwrap();
        }
        assert_eq!(s.list(known::config_maps(), Some("b"), None).0.len(), 2);
        let after = ("b".to_string(), "1".to_string());
        let rest = s.list(known::config_maps(), None, Some(&after)).0;
        assert_eq!(
            rest.iter().map(|o| meta::name(o)).collect::<Vec<_>>(),
            ["2", "1"]
        );
    }

    #[test]
    fn event_changes_wait_for_the_tick_and_a_settled_store_passes_no_more() {
        let s = Store::new();
        let mut gate = PassGate::default();
        let first = gate.begin(&s, false).expect("the first pass always runs");
        assert_eq!(first.previous, None);
        let rv = s.resource_version();
        s.create(known::config_maps(), cm("x", "a")).unwrap();
        let second = gate.begin(&s, false).expect("a ConfigMap changed");
        assert_eq!(second.previous, Some(rv));
        let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "x"}});
        s.create(known::events(), event).unwrap();
        assert!(gate.begin(&s, false).is_none(), "only an Event changed");
        assert!(
            gate.begin(&s, true).is_some(),
            "the tick retries after an Event"
        );
        assert!(gate.begin(&s, true).is_none(), "nothing changed since");
        assert!(gate.begin(&s, false).is_none());
        gate.retry_on_tick(true);
        assert!(
            gate.begin(&s, true).is_some(),
            "retrying: every tick passes"
        );
        assert!(
            gate.begin(&s, false).is_none(),
            "a wake-up by a change still needs one"
        );
    }

    #[test]
    fn changes_name_namespaces_and_cluster_kinds_until_the_log_runs_out() {
        let s = Store::new();
        let rv = s.resource_version();
        assert_eq!(s.changes_since(rv), Some(Changes::default()));
        s.create(known::config_maps(), cm("a", "1")).unwrap();
        s.create(known::config_maps(), cm("b", "1")).unwrap();
        let after_b = s.resource_version();
        s.create(known::config_maps(), cm("a", "2")).unwrap();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}});
        s.create(known::namespaces(), ns).unwrap();
        let changes = s.changes_since(rv).unwrap();
        assert_eq!(
            changes
                .namespaces
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(changes.cluster_kinds, [known::namespaces()]);
        let later = s.changes_since(after_b).unwrap();
        assert_eq!(later.namespaces.len(), 1);
        for i in 0..EVENT_LOG_LEN {
            s.create(known::config_maps(), cm("d", &i.to_string()))
                .unwrap();
        }
        assert_eq!(s.changes_since(rv), None, "the log no longer reaches back");
    }

    #[test]
    fn a_watch_from_before_dropped_history_is_gone() {
        let s = Store::new();
        let rv = s.resource_version();
        s.create(known::config_maps(), cm("x", "a")).unwrap();
        s.drop_history();
        assert_eq!(
            s.subscribe(known::config_maps(), Some(rv))
                .err()
                .map(|e| e.code),
            Some(410)
        );
        let now = s.resource_version();
        assert!(s.subscribe(known::config_maps(), Some(now)).is_ok());
        assert_eq!(s.changes_since(rv), None);
    }

    #[test]
    fn watch_replays_events_after_a_resource_version() {
        let s = Store::new();
        let rv = s.resource_version();
        s.create(known::config_maps(), cm("x", "a")).unwrap();
        s.delete(known::config_maps(), "x", "a").unwrap();
        let sub = s.subscribe(known::config_maps(), Some(rv)).unwrap();
        let types: Vec<_> = sub.backlog.iter().map(|e| e.event_type).collect();
        assert_eq!(types, [EventType::Added, EventType::Deleted]);
    }
}
