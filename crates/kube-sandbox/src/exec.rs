//! `pods/exec` over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`): runs the command as a
//! real process in the container's filesystem view and streams it.
//!
//! Frames carry a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize; v5 adds
//! `[255, channel]` to half-close a stream (how clients end stdin). After the process exits and
//! its output is drained, the status (a `metav1.Status`) goes on channel 3, then a close frame
//! with code 1000, which kubectl requires.
//!
//! Injected exec faults ([`crate::faults`]) act on stdout as it is sent: after the budget the
//! stream is cut (connection dropped, no status, no close frame, process killed) or stalled
//! (nothing more is sent or read from the process until the client goes away).

use crate::api::{Query, Target};
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use crate::faults::{ExecAction, Faults, StdinBudget, StdoutBudget};
use crate::kubelet::runtime::{self, ProcessSpec};
use crate::meta;
use crate::resources::known;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";
/// Read size for stdout/stderr; large frames keep per-frame overhead low.
const CHUNK: usize = 256 * 1024;

/// What the client asked for.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// Whether the client sends stdin.
    pub stdin: bool,
    /// Whether the client wants stdout.
    pub stdout: bool,
    /// Whether the client wants stderr.
    pub stderr: bool,
}

/// Validates an exec request and upgrades the connection.
pub fn upgrade(
    cluster: Arc<Cluster>,
    t: Target,
    query: Query,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let pod = cluster
        .store
        .get(known::pods(), &ns, &name)
        .ok_or_else(|| ApiError::not_found("pods", &name))?;
    let container = match query.get("container") {
        Some(c) => c.to_string(),
        None => pod
            .pointer("/spec/containers/0/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    };
    let argv = query.all("command");
    if argv.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let phase = meta::str_at(&pod, "/status/phase");
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade connection: container {container} not running in pod {name} (phase {phase})"
        )));
    }
    let spec = cluster
        .kubelet
        .process_spec(meta::uid(&pod), &container)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to upgrade connection: container not found (\"{container}\")"
            ))
        })?;
    let req = ExecRequest {
        argv,
        stdin: query.flag("stdin"),
        stdout: query.flag("stdout") || query.get("stdout").is_none(),
        stderr: query.flag("stderr") || query.get("stderr").is_none(),
    };
    serve(cluster.faults.clone(), spec, req, ws)
}

/// Upgrades to an exec session running `req` in the container view `spec`; `faults` may cut
/// or stall the stream (the embedded sandbox's exec faults).
pub fn serve(
    faults: Faults,
    spec: ProcessSpec,
    req: ExecRequest,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let ws = ws.protocols([V5, V4]);
    let v5 = match ws.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(V5) => true,
        Some(_) => false,
        None => {
            return Err(ApiError::bad_request(format!(
                "unsupported streaming protocol: offer {V5} or {V4} in Sec-WebSocket-Protocol"
            )));
        }
    };
    Ok(ws
        .max_frame_size(16 << 20)
        .on_upgrade(move |socket| session(faults, socket, spec, req, v5)))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

/// The Status sent on channel 3 for an exit code.
pub fn exit_status(argv: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command {argv:?}, exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

async fn pump(mut r: impl AsyncRead + Unpin, channel: u8, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; CHUNK + 1];
    buf[0] = channel;
    loop {
        match r.read(&mut buf[1..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx
                    .send(Message::Binary(Bytes::copy_from_slice(&buf[..=n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// How the frame writer stopped.
enum WriterEnd {
    /// Every frame was sent and the channel closed; the sink is open for the close frame.
    Drained(SplitSink<WebSocket, Message>),
    /// The client went away.
    Gone,
    /// An exec fault cut the stream (the sink is dropped, without a close frame).
    Cut,
    /// An exec fault stalled the stream: the sink and the undrained channel are kept, so the
    /// connection stays open and the pumps block instead of reading the process.
    Stalled(SplitSink<WebSocket, Message>, mpsc::Receiver<Message>),
}

/// Sends frames in order, spending stdout against the stream's fault budget.
async fn write_frames(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Message>,
    mut budget: StdoutBudget,
) -> WriterEnd {
    let mut fired = budget.admit(0).1;
    loop {
        match fired {
            Some(ExecAction::Cut) => return WriterEnd::Cut,
            Some(ExecAction::Stall) => return WriterEnd::Stalled(sink, rx),
            None => {}
        }
        let Some(mut msg) = rx.recv().await else {
            return WriterEnd::Drained(sink);
        };
        if let Message::Binary(data) = &msg
            && data.first() == Some(&1)
        {
            let (keep, action) = budget.admit(data.len() - 1);
            fired = action;
            if keep == 0 {
                continue;
            }
            msg = Message::Binary(data.slice(..=keep));
        }
        if sink.send(msg).await.is_err() {
            return WriterEnd::Gone;
        }
    }
}

/// Feeds client frames to the process's stdin until the client goes away, or until an
/// `exec-stdin-cut-after` fault fires: then the process is killed and the writer aborted, so
/// the connection drops without a status or close frame.
async fn read_frames(
    mut incoming: SplitStream<WebSocket>,
    mut stdin: Option<tokio::process::ChildStdin>,
    v5: bool,
    mut budget: StdinBudget,
    cut: impl FnOnce(),
) {
    while let Some(Ok(msg)) = incoming.next().await {
        let data = match msg {
            Message::Binary(d) => d,
            // The kubelet reads text frames as data too; the official Python client sends
            // stdin given as `str` in them.
            Message::Text(t) => Bytes::copy_from_slice(t.as_str().as_bytes()),
            Message::Close(_) => break,
            _ => continue,
        };
        match data.first() {
            Some(0) => {
                let (keep, cut_now) = budget.admit(data.len() - 1);
                if let Some(s) = stdin.as_mut()
                    && s.write_all(&data[1..=keep]).await.is_err()
                {
                    stdin = None;
                }
                if cut_now {
                    cut();
                    return;
                }
            }
            Some(255) if v5 && data.get(1) == Some(&0) => {
                if let Some(mut s) = stdin.take() {
                    let _ = s.shutdown().await;
                }
            }
            _ => {}
        }
    }
    // The client went away (or, on v4, closed to signal the end of stdin); dropping stdin
    // gives the process EOF.
}

async fn session(
    faults: Faults,
    socket: WebSocket,
    mut spec: ProcessSpec,
    req: ExecRequest,
    v5: bool,
) {
    let (mut sink, incoming) = socket.split();
    spec.argv = req.argv.clone();
    let mut cmd = runtime::exec_command(&spec);
    let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    cmd.stdin(piped(req.stdin))
        .stdout(piped(req.stdout))
        .stderr(piped(req.stderr));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let status = json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
                "message": format!("starting the process: {e} (is bubblewrap installed?)")});
            let _ = sink.send(frame(3, status.to_string().as_bytes())).await;
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "".into(),
                })))
                .await;
            return;
        }
    };
    let pid = child.id().unwrap_or(0);
    let (tx, rx) = mpsc::channel::<Message>(8);
    let mut writer = tokio::spawn(write_frames(sink, rx, faults.exec_budget()));
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, 1, tx.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, 2, tx.clone())));
    }
    let writer_handle = writer.abort_handle();
    let cut = move || {
        runtime::kill_group(pid);
        writer_handle.abort();
    };
    let mut reader = tokio::spawn(read_frames(
        incoming,
        child.stdin.take(),
        v5,
        faults.stdin_budget(),
        cut,
    ));
    let argv = req.argv;
    let exited = async move {
        let status = child.wait().await;
        for p in pumps {
            let _ = p.await;
        }
        runtime::kill_group(pid);
        let code = status
            .ok()
            .and_then(|s| {
                s.code().or_else(|| {
                    std::os::unix::process::ExitStatusExt::signal(&s).map(|sig| 128 + sig)
                })
            })
            .unwrap_or(1);
        let _ = tx
            .send(frame(3, exit_status(&argv, code).to_string().as_bytes()))
            .await;
    };
    tokio::pin!(exited);
    // The writer ends before the process only when a fault fires or the client goes away.
    let (end, finished) = tokio::select! {
        _ = &mut exited => (writer.await, true),
        end = &mut writer => (end, false),
    };
    match end {
        Ok(WriterEnd::Drained(mut sink)) => {
            reader.abort();
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "".into(),
                })))
                .await;
            let _ = sink.close().await;
        }
        Ok(WriterEnd::Cut) => {
            // The writer dropped its half; ending the reader closes the socket without a
            // close frame, as a crashed node or a cut network would.
            runtime::kill_group(pid);
            reader.abort();
            let _ = reader.await;
        }
        Ok(WriterEnd::Stalled(sink, rx)) => {
            // The reader keeps answering the client's pings: a live, silent peer.
            let _ = (&mut reader).await;
            runtime::kill_group(pid);
            drop((sink, rx));
        }
        Ok(WriterEnd::Gone) | Err(_) => reader.abort(),
    }
    if !finished {
        // Reap the process; on a plain disconnect it ends as it would have without a client.
        exited.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_zero_exit_carries_the_code_as_a_cause() {
        let s = exit_status(&["sh".into()], 3);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(&[], 0)["status"], "Success");
    }
}
