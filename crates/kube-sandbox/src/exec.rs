//! `pods/exec` over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`): runs the command as a
//! real process in the container's filesystem view and streams it.
//!
//! Frames carry a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize; v5 adds
//! `[255, channel]` to half-close a stream (how clients end stdin). After the process exits and
//! its output is drained, the status (a `metav1.Status`) goes on channel 3, then a close frame
//! with code 1000, which kubectl requires.

use crate::api::{Query, Target};
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use crate::kubelet::runtime::{self, ProcessSpec};
use crate::meta;
use crate::resources::known;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
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
struct ExecRequest {
    argv: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
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
        .on_upgrade(move |socket| session(socket, spec, req, v5)))
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

async fn session(socket: WebSocket, mut spec: ProcessSpec, req: ExecRequest, v5: bool) {
    let (mut sink, mut incoming) = socket.split();
    spec.argv = req.argv.clone();
    let mut cmd = runtime::command(&spec);
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
    let (tx, mut rx) = mpsc::channel::<Message>(8);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return None;
            }
        }
        Some(sink)
    });
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, 1, tx.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, 2, tx.clone())));
    }
    let mut stdin = child.stdin.take();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = incoming.next().await {
            let data = match msg {
                Message::Binary(d) => d,
                Message::Close(_) => break,
                _ => continue,
            };
            match data.first() {
                Some(0) => {
                    if let Some(s) = stdin.as_mut()
                        && s.write_all(&data[1..]).await.is_err()
                    {
                        stdin = None;
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
        // The client went away (or, on v4, closed to signal the end of stdin).
        drop(stdin);
        true
    });
    let status = child.wait().await;
    for p in pumps {
        let _ = p.await;
    }
    reader.abort();
    runtime::kill_group(pid);
    let code = status
        .ok()
        .and_then(|s| {
            s.code()
                .or_else(|| std::os::unix::process::ExitStatusExt::signal(&s).map(|sig| 128 + sig))
        })
        .unwrap_or(1);
    let _ = tx
        .send(frame(
            3,
            exit_status(&req.argv, code).to_string().as_bytes(),
        ))
        .await;
    drop(tx);
    if let Ok(Some(mut sink)) = writer.await {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "".into(),
            })))
            .await;
        let _ = sink.close().await;
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
