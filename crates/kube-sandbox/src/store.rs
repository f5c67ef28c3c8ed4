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
use std::collections::{BTreeMap, VecDeque};
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

    /// Number of objects of a kind.
    pub fn count(&self, res: &'static ResourceInfo) -> usize {
        self.lock().tables[res.index()].len()
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
