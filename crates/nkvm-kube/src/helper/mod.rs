//! Helper pods: the short-lived pods nkvm mounts a claim in to read (backup) or write
//! (restore) it. [`spec`] builds the pod as a pure function of its options; [`lifecycle`]
//! creates it, waits until it runs (or says why it does not), deletes it, and sweeps helpers a
//! crashed engine left.

pub mod lifecycle;
pub mod spec;

pub use lifecycle::{
    EventLine, HelperError, PodDiagnostics, RunningPod, SweepReport, WaitProblem, create_helper,
    delete_helper, pod_diagnostics, sweep_helpers, wait_running,
};
pub use spec::{
    CONTAINER, DATA_DIR, HelperMode, HelperPodOptions, INSTANCE_LABEL, JOB_ID_LABEL, MANAGED_BY,
    MANAGED_BY_LABEL, MODE_LABEL, PVC_LABEL, SecurityProfile, default_resources, label_value,
    pod_name, pod_spec,
};
