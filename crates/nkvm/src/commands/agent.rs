//! `nkvm agent`: the program nkvm runs over exec inside helper pods of its own image. It
//! writes nkvm's agent wire format to stdout (see docs/agent.md) and reports its own failures
//! on stderr; the exit code is 0 only when the trailer says the job's bytes are whole, 1 when
//! the trailer says why not, 2 when the agent failed before a trailer, 3 when a direct upload
//! to the store failed.

use crate::cli::{AgentBackupArgs, AgentCommand, AgentRestoreArgs};
use nkvm_domain::Compression;
use nkvm_engine::agent::{Fault, probe_output, sink, source};
use nkvm_engine::archive::CompressionOptions;
use std::io::BufRead;
use std::process::ExitCode;

/// How the agent ended, as its exit code says.
enum AgentEnd {
    /// The trailer went out: whole (0) or not (1).
    Trailer(bool),
    /// The store failed a direct upload (3).
    Store(String),
}

/// Runs an agent subcommand.
pub fn run(cmd: AgentCommand) -> ExitCode {
    let done = match cmd {
        AgentCommand::Probe => {
            print!("{}", probe_output());
            Ok(AgentEnd::Trailer(true))
        }
        AgentCommand::Backup(args) => backup(&args),
        AgentCommand::Restore(args) => restore(&args).map(AgentEnd::Trailer),
    };
    match done {
        Ok(AgentEnd::Trailer(true)) => ExitCode::SUCCESS,
        // The trailer says why.
        Ok(AgentEnd::Trailer(false)) => ExitCode::from(1),
        Ok(AgentEnd::Store(e)) => {
            eprintln!("error: nkvm agent: the store failed the direct upload: {e}");
            ExitCode::from(3)
        }
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

/// The direct upload's target: one JSON line on stdin (it holds credentials, so it never
/// comes on the command line, and errors never quote it).
fn direct_target() -> Result<nkvm_store::DirectTarget, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the direct upload's target from stdin: {e}"))?;
    serde_json::from_str(&line).map_err(|e| {
        format!(
            "the direct upload's target on stdin is not valid (line {}, column {})",
            e.line(),
            e.column()
        )
    })
}

fn backup(args: &AgentBackupArgs) -> Result<AgentEnd, String> {
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
        direct: args.direct_upload.then(direct_target).transpose()?,
    };
    if let Some(target) = &source_args.direct
        && target.age_recipients.is_empty() == args.encrypt
    {
        return Err(if args.encrypt {
            "--encrypt was given, but the direct upload's target names no age recipients".into()
        } else {
            "the direct upload's target names age recipients (an encrypted store), but --encrypt was not given".into()
        });
    }
    // Unlocked: the agent writes from its own output thread.
    match source::backup(&source_args, std::io::stdout()).map_err(|e| e.to_string())? {
        source::SourceEnd::Trailer(ok) => Ok(AgentEnd::Trailer(ok)),
        source::SourceEnd::Store(e) => Ok(AgentEnd::Store(e)),
    }
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
