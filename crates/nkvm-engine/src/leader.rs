//! Leader election over a `coordination.k8s.io/v1` Lease, so one scheduler runs per cluster
//! however many `nkvm serve` processes point at it. The rules are client-go's: a candidate
//! takes the Lease when nobody holds it, or when its record has not changed for the lease
//! duration as measured on the candidate's own clock (so clock skew between replicas does
//! not matter); the holder renews it every `renew_every`; every write is an update that
//! carries the resourceVersion read, so of two candidates racing for an expired Lease the
//! API server accepts one and answers the other 409 Conflict. A holder that cannot renew
//! within the lease duration stops acting as leader before anyone else may take over, and a
//! holder that stops cleanly releases the Lease so a successor takes it at once.
//!
//! Written here rather than taken from a crate: the election crates for kube-rs found track
//! older kube releases than this workspace's, and the part needed is about a hundred lines.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Which Lease, who we are, and the timings.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate's identity (unique per process).
    pub identity: String,
    /// How long a Lease nobody renews stays held.
    pub duration: Duration,
    /// How often the holder renews, and candidates retry.
    pub renew_every: Duration,
}

/// One candidate's view of the election.
pub struct Elector {
    api: Api<Lease>,
    opts: LeaseOptions,
    /// The Lease's resourceVersion when last seen to change, and when (our clock).
    observed: Option<(String, Instant)>,
    /// When we last wrote the Lease as its holder.
    renewed: Option<Instant>,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    /// A candidate over `client`.
    pub fn new(client: kube::Client, opts: LeaseOptions) -> Self {
        Elector {
            api: Api::namespaced(client, &opts.namespace),
            opts,
            observed: None,
            renewed: None,
        }
    }

    /// The options in force.
    pub fn options(&self) -> &LeaseOptions {
        &self.opts
    }

    fn spec(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(jiff::Timestamp::now());
        let mine = previous
            .and_then(|s| s.holder_identity.as_deref())
            .is_some_and(|h| h == self.opts.identity);
        let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.opts.identity.clone()),
            lease_duration_seconds: Some(self.opts.duration.as_secs().max(1) as i32),
            acquire_time: if mine {
                previous.and_then(|s| s.acquire_time.clone())
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if mine || previous.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..Default::default()
        }
    }

    /// One attempt to take or renew the Lease; whether we hold it afterwards. A conflict
    /// while we hold it (the slot ledger wrote the Lease meanwhile) is retried once at once.
    pub async fn step(&mut self) -> Result<bool, kube::Error> {
        let held = self.try_step().await?;
        if !held && self.renewed.is_some() {
            return self.try_step().await;
        }
        Ok(held)
    }

    async fn try_step(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.opts.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.opts.name.clone()),
                    namespace: Some(self.opts.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => Ok(self.held(&created)),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != rv) {
            self.observed = Some((rv, Instant::now()));
        }
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .map_or(self.opts.duration, |s| Duration::from_secs(s.max(1) as u64));
        let unchanged_for = self
            .observed
            .as_ref()
            .map_or(Duration::ZERO, |(_, t)| t.elapsed());
        let free = holder.is_empty() || unchanged_for > duration;
        if holder != self.opts.identity && !free {
            self.renewed = None;
            return Ok(false);
        }
        lease.spec = Some(self.spec(Some(&spec)));
        // The read resourceVersion travels with the update: a concurrent writer makes it 409.
        match self
            .api
            .replace(&self.opts.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => Ok(self.held(&updated)),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn held(&mut self, lease: &Lease) -> bool {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        self.observed = Some((rv, Instant::now()));
        self.renewed = Some(Instant::now());
        true
    }

    /// Whether we may still act as leader after a failed renewal: only while the last
    /// successful one is younger than the lease duration minus one renewal period, so we stop
    /// before anyone else may start.
    fn still_leading(&self) -> bool {
        let margin = self.opts.duration.saturating_sub(self.opts.renew_every);
        self.renewed.is_some_and(|t| t.elapsed() < margin)
    }

    /// Gives the Lease up if we hold it (a clean stop), so a successor takes it at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.opts.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.opts.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        self.renewed = None;
        self.api
            .replace(&self.opts.name, &PostParams::default(), &lease)
            .await
            .map(drop)
    }

    /// Campaigns until `stop` turns true, publishing whether we lead on `leading`; releases
    /// the Lease on the way out.
    pub async fn run(mut self, leading: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        loop {
            let now_leading = match self.step().await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(error = %e, lease = self.opts.name, "renewing the scheduler's Lease failed");
                    self.still_leading()
                }
            };
            leading.send_if_modified(|l| {
                let changed = *l != now_leading;
                *l = now_leading;
                changed
            });
            tokio::select! {
                _ = tokio::time::sleep(self.opts.renew_every) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        leading.send_replace(false);
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "releasing the scheduler's Lease failed; another replica takes over when it expires");
        }
    }
}

/// The annotation of the Lease that keeps each policy's last handled slot.
pub const SLOTS_ANNOTATION: &str = "nkvm.io/last-slots";

/// The slot ledger kept on the scheduler's Lease, shared by every replica: a slot is claimed
/// by an update carrying the resourceVersion read, and only by the Lease's holder, so a
/// replica that lost the Lease, or raced another, cannot claim it too.
pub struct LeaseLedger {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl LeaseLedger {
    /// The ledger on the Lease `opts` names.
    pub fn new(client: kube::Client, opts: &LeaseOptions) -> Self {
        LeaseLedger {
            api: Api::namespaced(client, &opts.namespace),
            name: opts.name.clone(),
            identity: opts.identity.clone(),
        }
    }

    fn slots(lease: &Lease) -> std::collections::BTreeMap<String, String> {
        lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SLOTS_ANNOTATION))
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default()
    }

    async fn claim_once(&self, policy: &str, slot: &str) -> Result<Option<bool>, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(Some(false));
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.identity.as_str()) {
            return Ok(Some(false));
        }
        let mut slots = Self::slots(&lease);
        // RFC 3339 UTC times of one format compare as text.
        if slots.get(policy).is_some_and(|done| done.as_str() >= slot) {
            return Ok(Some(false));
        }
        slots.insert(policy.into(), slot.into());
        let json = serde_json::to_string(&slots).unwrap_or_default();
        lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(SLOTS_ANNOTATION.into(), json);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Some(true)),
            Err(e) if is_conflict(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl crate::scheduler::SlotLedger for LeaseLedger {
    fn last<'a>(
        &'a self,
        policy: &'a str,
    ) -> crate::scheduler::BoxFuture<'a, Result<Option<chrono::DateTime<chrono::Utc>>, String>>
    {
        Box::pin(async move {
            let lease = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| e.to_string())?;
            Ok(lease
                .and_then(|l| Self::slots(&l).get(policy).cloned())
                .and_then(|s| s.parse().ok()))
        })
    }

    fn claim<'a>(
        &'a self,
        policy: &'a str,
        slot: chrono::DateTime<chrono::Utc>,
    ) -> crate::scheduler::BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let slot = slot.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            // A conflict is the elector's renewal or another replica: read again and retry.
            for _ in 0..3 {
                if let Some(claimed) = self
                    .claim_once(policy, &slot)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    return Ok(claimed);
                }
            }
            Ok(false)
        })
    }
}

impl crate::App {
    /// The engine's cluster client (the scheduler's Lease lives on the same connection).
    pub fn kube_client(&self) -> kube::Client {
        self.conn.client.clone()
    }
}
