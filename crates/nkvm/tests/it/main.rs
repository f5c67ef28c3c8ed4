//! The `nkvm` binary's contracts, run as a user runs it.

mod sandbox_command;
