//! `nkvm agent`: the program nkvm runs over exec inside helper pods of its own image. It
//! writes nkvm's agent wire format to stdout (see docs/agent.md) and reports its own failures
//! on stderr; the exit code is 0 only when the trailer says the job's bytes are whole.

use crate::cli::{AgentBackupArgs, AgentCommand, AgentRestoreArgs};
use nkvm_domain::Compression;
use nkvm_engine::agent::{Fault, probe_output, sink, source};
use nkvm_engine::archive::CompressionOptions;
use std::process::ExitCode;

/// Runs an agent subcommand.
pub fn run(cmd: AgentCommand) -> ExitCode {
    let done = match cmd {
        AgentCommand::Probe => {
            print!("{}", probe_output());
            Ok(true)
        }
        AgentCommand::Backup(args) => backup(&args),
        AgentCommand::Restore(args) => restore(&args),
    };
    match done {
        Ok(true) => ExitCode::SUCCESS,
        // The trailer says why.
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: nkvm agent: {e}");
            ExitCode::from(2)
        }
    }
}

fn fault(f: Option<&str>) -> Result<Option<Fault>, String> {
    f.map(str::parse).transpose()
}

fn compression(name: &str) -> Result<Compression, String> {
    name.parse()
}

fn backup(args: &AgentBackupArgs) -> Result<bool, String> {
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let source_args = source::SourceArgs {
        dir: args.dir.clone(),
        compression: CompressionOptions {
            compression: compression(&args.compression)?,
            level: args.level,
            workers,
        },
        fault: fault(args.fault.as_deref())?,
    };
    // Unlocked: the agent writes from its own output thread.
    source::backup(&source_args, std::io::stdout()).map_err(|e| e.to_string())
}

fn restore(args: &AgentRestoreArgs) -> Result<bool, String> {
    let sink_args = sink::SinkArgs {
        dir: args.dir.clone(),
        compression: compression(&args.compression)?,
        bytes: args.bytes,
        sha256: args.sha256.clone(),
        as_root: args.as_root,
        privileged: args.privileged,
        strip_set_id: args.strip_set_id,
        fault: fault(args.fault.as_deref())?,
    };
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    sink::restore(&sink_args, stdin, stdout).map_err(|e| e.to_string())
}
