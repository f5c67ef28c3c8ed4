//! Conformance tests: real `kubectl`, the kube-rs client and the official Python client against
//! the sandbox cluster.
//!
//! Every test works in its own namespace, so the suite can also run against a real cluster:
//! set `NKVM_TEST_KUBECONFIG` to its kubeconfig (tests that need the sandbox's fixed nodes,
//! taints or StorageClasses skip themselves there).

mod faults;
mod harness;
mod kube_client;
mod kubectl_basics;
mod kubectl_exec;
mod python_client;
mod rbac;
mod scale;
mod scheduling;
mod upstream;
mod workloads;
