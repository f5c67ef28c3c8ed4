//! The steps every job that works inside a claim shares: placing a helper pod where the claim
//! can be mounted (beside a running ReadWriteOnce consumer, with that pod's tolerations),
//! creating it and waiting until it runs, and finding out which `tar` its image has. The
//! tracker learns of the pod as soon as it exists, so the lifecycle deletes it however the job
//! ends.

use crate::App;
use crate::agent::{self, DataPath};
use crate::lifecycle::{JobFailure, Tracker, fail};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Toleration};
use kube::Api;
use nkvm_domain::UserError;
use nkvm_domain::{FailureKind, PvcRef, Stage};
use nkvm_kube::exec::{ExecTarget, exec_capture};
use nkvm_kube::helper::{self, HelperPodOptions};
use nkvm_kube::tar_command::TarFlavor;

/// A helper pod that runs, ready for exec.
pub(crate) struct RunningHelper {
    /// Where to exec.
    pub(crate) target: ExecTarget,
    /// The node it runs on.
    pub(crate) node: String,
    /// The image's tar.
    pub(crate) flavor: TarFlavor,
    /// Whether the job runs `nkvm agent` in it or tar directly.
    pub(crate) path: DataPath,
}

impl App {
    /// The tolerations of `pod` in `namespace`, so a helper pinned to its node may run there;
    /// none when the pod cannot be read (the helper then says why it does not schedule).
    pub(crate) async fn consumer_tolerations(&self, namespace: &str, pod: &str) -> Vec<Toleration> {
        let pods: Api<Pod> = Api::namespaced(self.conn.client.clone(), namespace);
        match pods.get(pod).await {
            Ok(p) => p.spec.and_then(|s| s.tolerations).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Reads a claim; API errors keep their kind (a 403 is forbidden, a 404 not found).
    pub(crate) async fn read_claim(
        &self,
        claim: &PvcRef,
        stage: Stage,
    ) -> Result<PersistentVolumeClaim, JobFailure> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.conn.client.clone(), claim.namespace.as_str());
        claims.get(claim.name.as_str()).await.map_err(|e| {
            fail(
                stage,
                nkvm_kube::failure_kind(&e),
                format!("reading {claim}: {}", nkvm_kube::api_message(&e)),
            )
        })
    }

    /// Creates the helper pod `opts` describes (labelled with this instance's id, so only
    /// this instance's recovery sweeps it), waits until it runs and probes its tar.
    pub(crate) async fn start_helper(
        &self,
        tracker: &Tracker,
        opts: &HelperPodOptions,
    ) -> Result<RunningHelper, JobFailure> {
        tracker.enter(Stage::HelperPod);
        let ns = opts.claim.namespace.as_str();
        let mut opts = opts.clone();
        opts.instance = self
            .history
            .instance_id()
            .map_err(|e| fail(Stage::HelperPod, e.kind(), e.to_string()))?;
        let pod = helper::pod_spec(&opts);
        let name = pod.metadata.name.clone().unwrap_or_default();
        let in_helper_pod =
            |e: helper::HelperError| fail(Stage::HelperPod, e.kind(), e.to_string());
        helper::create_helper(&self.conn.client, &pod)
            .await
            .map_err(in_helper_pod)?;
        tracker.helper_created(ns, &name);
        let running = helper::wait_running(
            &self.conn.client,
            ns,
            &name,
            self.settings.helper_pod_timeout,
        )
        .await
        .map_err(in_helper_pod)?;
        tracker.helper_on(&running.node);
        tracker.enter(Stage::ProbeTar);
        let target = ExecTarget::new(ns, &name, helper::CONTAINER);
        let path = DataPath::for_image(&opts.image, &self.settings.own_image);
        let flavor = match path {
            DataPath::Agent | DataPath::Direct => self.probe_agent(&target).await?,
            DataPath::Tar => self.probe_tar(&target).await?,
        };
        Ok(RunningHelper {
            target,
            node: running.node,
            flavor,
            path,
        })
    }

    /// Whether the helper (nkvm's own image) has an agent of this protocol, and its tar.
    async fn probe_agent(&self, target: &ExecTarget) -> Result<TarFlavor, JobFailure> {
        let probe = exec_capture(
            &self.conn.client,
            target,
            &[agent::AGENT_PATH, "agent", "probe"],
        )
        .await
        .map_err(|e| fail(Stage::ProbeTar, e.kind(), e.to_string()))?;
        agent::read_probe(probe.exit_code, &probe.stdout, &probe.stderr)
            .map_err(|e| fail(Stage::ProbeTar, FailureKind::CommandFailed, e.to_string()))
    }

    /// Exec options for a job's data stream.
    pub(crate) fn stream_options(&self) -> nkvm_kube::exec::ExecOptions {
        nkvm_kube::exec::ExecOptions {
            idle_timeout: self.settings.exec_idle_timeout,
            ..Default::default()
        }
    }

    /// Which tar the helper image has (GNU or BusyBox); refuses images without one.
    async fn probe_tar(&self, target: &ExecTarget) -> Result<TarFlavor, JobFailure> {
        let probe = exec_capture(&self.conn.client, target, &["tar", "--version"])
            .await
            .map_err(|e| fail(Stage::ProbeTar, e.kind(), e.to_string()))?;
        TarFlavor::detect(probe.exit_code, &probe.stdout, &probe.stderr)
            .map_err(|e| fail(Stage::ProbeTar, FailureKind::CommandFailed, e.to_string()))
    }
}
