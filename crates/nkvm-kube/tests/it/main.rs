//! nkvm-kube against a sandbox cluster: helper pods (placement, read-only mounts, failures
//! with their Events, deletion, the sweep) and exec streams (tar byte-exact, exit codes, cut
//! and stalled streams, stdin, throughput).

mod exec_stream;
mod harness;
mod helpers;
