//! Creating the [`samples`](super::samples) in a cluster through its API, and waiting until
//! every sample pod runs with its volume filled (each prints a `ready:` line once it has).

use super::samples::{self, READY_MARKER, Samples};
use anyhow::{Context, bail};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;
use tokio::time::Instant;

/// How often seeding looks at pods while it waits.
const POLL: Duration = Duration::from_millis(250);

/// What seeding made.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// The sample namespaces.
    pub namespaces: Vec<String>,
    /// Sample pods running, as `namespace/name`.
    pub pods: Vec<String>,
}

/// Creates the samples with `client` and returns once every sample pod runs and has filled
/// its volume; fails after `limit` naming the pods still waiting.
pub async fn seed(client: &Client, limit: Duration) -> anyhow::Result<Seeded> {
    let deadline = Instant::now() + limit;
    let s = samples::samples();
    for ns in &s.namespaces {
        Api::all(client.clone())
            .create(&PostParams::default(), ns)
            .await
            .with_context(|| {
                format!(
                    "creating namespace {}",
                    ns.metadata.name.as_deref().unwrap_or("")
                )
            })?;
    }
    for class in &s.storage_classes {
        Api::all(client.clone())
            .create(&PostParams::default(), class)
            .await
            .with_context(|| {
                let name = class.metadata.name.as_deref().unwrap_or("");
                format!("creating StorageClass {name}")
            })?;
    }
    create_all(client, &s.claims).await?;
    fill_unused_claims(client, &s, deadline).await?;
    create_all(client, &s.deployments).await?;
    create_all(client, &s.stateful_sets).await?;
    for cron in &s.cron_jobs {
        let made = create(client, cron).await?;
        let name = format!("{}-manual", made.metadata.name.as_deref().unwrap_or("job"));
        create(client, &samples::job_from_cron_job(&made, &name)).await?;
    }
    create_all(client, &s.pods).await?;
    let namespaces: Vec<String> = s
        .namespaces
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let pods = wait_until_ready(client, &namespaces, s.running_pods(), deadline).await?;
    Ok(Seeded { namespaces, pods })
}

async fn create<K>(client: &Client, object: &K) -> anyhow::Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let meta = object.meta();
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let name = meta.name.as_deref().unwrap_or("");
    Api::namespaced(client.clone(), ns)
        .create(&PostParams::default(), object)
        .await
        .with_context(|| format!("creating {} {ns}/{name}", K::kind(&())))
}

async fn create_all<K>(client: &Client, objects: &[K]) -> anyhow::Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    for object in objects {
        create(client, object).await?;
    }
    Ok(())
}

/// Runs the writer pods to completion and deletes them, so their claims hold data but have
/// no consumer (like a volume whose workload was removed).
async fn fill_unused_claims(client: &Client, s: &Samples, deadline: Instant) -> anyhow::Result<()> {
    for writer in &s.writers {
        let ns = writer.metadata.namespace.as_deref().unwrap_or("default");
        let name = writer.metadata.name.as_deref().unwrap_or("");
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let events: Api<Event> = Api::namespaced(client.clone(), ns);
        create(client, writer).await?;
        loop {
            match phase(&pods.get(name).await?).as_str() {
                "Succeeded" => break,
                "Failed" => bail!(
                    "the sample pod {ns}/{name} failed ({}); its log: {}",
                    describe(&pods, &events, name).await,
                    logs(&pods, name).await
                ),
                _ if Instant::now() > deadline => bail!(
                    "the sample pod {ns}/{name} did not finish in time ({})",
                    describe(&pods, &events, name).await
                ),
                _ => tokio::time::sleep(POLL).await,
            }
        }
        pods.delete(name, &DeleteParams::default()).await?;
        while pods.get_opt(name).await?.is_some() {
            if Instant::now() > deadline {
                bail!("the sample pod {ns}/{name} was not deleted in time");
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into())
}

/// The phase and, when its container is not running, why: `Pending: RunContainerError:
/// starting bwrap (bubblewrap): ... (is it installed?)` says what to fix.
fn condition(pod: &Pod) -> String {
    let state = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref());
    let why = state.and_then(|s| {
        let waiting = s
            .waiting
            .as_ref()
            .map(|w| (w.reason.clone(), w.message.clone()));
        let terminated = s
            .terminated
            .as_ref()
            .map(|t| (t.reason.clone(), t.message.clone()));
        waiting.or(terminated)
    });
    let mut text = phase(pod);
    for part in why.into_iter().flat_map(|(r, m)| [r, m]).flatten() {
        if !part.is_empty() {
            text = format!("{text}: {part}");
        }
    }
    text
}

/// The pod's condition and its Warning events (where the kubelet says why a container did not
/// start), as `kubectl describe` would show them.
async fn describe(pods: &Api<Pod>, events: &Api<Event>, name: &str) -> String {
    let mut text = match pods.get(name).await {
        Ok(pod) => condition(&pod),
        Err(e) => format!("unreadable: {e}"),
    };
    let selector = format!("involvedObject.name={name},type=Warning");
    if let Ok(list) = events.list(&ListParams::default().fields(&selector)).await {
        let mut seen = BTreeSet::new();
        for message in list.into_iter().filter_map(|e| e.message) {
            if seen.insert(message.clone()) {
                text = format!("{text}; {message}");
            }
        }
    }
    text
}

async fn logs(pods: &Api<Pod>, name: &str) -> String {
    pods.logs(name, &LogParams::default())
        .await
        .unwrap_or_else(|e| format!("(no logs: {e})"))
}

/// Waits until `expected` pods in `namespaces` are Running and have printed the ready line.
async fn wait_until_ready(
    client: &Client,
    namespaces: &[String],
    expected: usize,
    deadline: Instant,
) -> anyhow::Result<Vec<String>> {
    let mut ready = BTreeSet::new();
    loop {
        // Past the deadline, this last round describes what is missing, then fails.
        let late = Instant::now() > deadline;
        let mut waiting = Vec::new();
        for ns in namespaces {
            let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
            let events: Api<Event> = Api::namespaced(client.clone(), ns);
            for pod in pods.list(&ListParams::default()).await? {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let id = format!("{ns}/{name}");
                if ready.contains(&id) {
                    continue;
                }
                match phase(&pod).as_str() {
                    "Failed" | "Succeeded" => bail!(
                        "the sample pod {id} stopped ({}); its log: {}",
                        describe(&pods, &events, &name).await,
                        logs(&pods, &name).await
                    ),
                    "Running" if logs(&pods, &name).await.contains(READY_MARKER) => {
                        ready.insert(id);
                    }
                    _ if late => {
                        waiting.push(format!("{id} ({})", describe(&pods, &events, &name).await));
                    }
                    _ => waiting.push(id),
                }
            }
        }
        if ready.len() >= expected && waiting.is_empty() {
            return Ok(ready.into_iter().collect());
        }
        if late {
            bail!(
                "sample pods not ready in time: {} of {expected} ready; waiting for {}",
                ready.len(),
                if waiting.is_empty() {
                    "pods not created yet".into()
                } else {
                    waiting.join(", ")
                }
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
