//! The `nkvm` binary's contracts, run as a user runs it.

mod backup;
mod browser;
mod connection;
mod copy;
mod demo;
mod deploy;
mod encryption;
mod harness;
mod inventory;
mod policies;
mod recovery;
mod restore;
mod sandbox_command;
mod sftp_stores;
mod stores;
mod upstream;
