//! The `nkvm` binary's contracts, run as a user runs it.

mod backup;
mod connection;
mod harness;
mod inventory;
mod recovery;
mod sandbox_command;
