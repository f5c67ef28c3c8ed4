use super::frames::*;
use super::*;
use futures_util::{Sink, Stream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

#[test]
fn success_is_exit_zero_and_non_zero_codes_come_from_the_causes() {
    assert_eq!(
        parse_status(br#"{"metadata":{},"status":"Success"}"#),
        Ok(StatusReading::Exited(0))
    );
    let failed = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
    assert_eq!(parse_status(failed), Ok(StatusReading::Exited(3)));
}

#[test]
fn other_failures_say_why_the_command_did_not_run() {
    let internal = br#"{"status":"Failure","reason":"InternalError","message":"starting the process: no such file"}"#;
    assert_eq!(
        parse_status(internal),
        Ok(StatusReading::NotRun {
            reason: "InternalError".into(),
            message: "starting the process: no such file".into()
        })
    );
    assert!(
        parse_status(br#"{"status":"Failure","reason":"NonZeroExitCode"}"#)
            .unwrap_err()
            .contains("without an exit code")
    );
    assert!(parse_status(b"not json").is_err());
}

#[test]
fn the_stderr_tail_keeps_the_last_bytes_and_says_it_dropped_some() {
    let mut t = Tail::new(4);
    t.push(b"ab");
    t.push(b"cdefghij");
    t.push(b"kl");
    assert_eq!(t.finish(), ("ijkl".to_string(), true));
    let mut t = Tail::new(4);
    t.push(b"abc");
    assert_eq!(t.finish(), ("abc".to_string(), false));
}

type Sent = std::sync::Arc<std::sync::Mutex<Vec<Message>>>;

/// A sink recording what is sent.
fn recording_sink() -> (impl Sink<Message, Error = tungstenite::Error> + Unpin, Sent) {
    let sent = Sent::default();
    let record = sent.clone();
    let sink = Box::pin(futures_util::sink::unfold((), move |(), msg: Message| {
        let record = record.clone();
        async move {
            record.lock().expect("not poisoned").push(msg);
            Ok::<_, tungstenite::Error>(())
        }
    }));
    (sink, sent)
}

fn binaries(sent: &Sent) -> Vec<Vec<u8>> {
    sent.lock()
        .expect("not poisoned")
        .iter()
        .filter_map(|m| match m {
            Message::Binary(b) => Some(b.to_vec()),
            _ => None,
        })
        .collect()
}

/// Runs the writer until it parks (it never returns after stdin ends).
async fn write_all(input: &[u8], protocol: ExecProtocol) -> Sent {
    let (mut sink, sent) = recording_sink();
    let mut stdin: &[u8] = input;
    let progress = Progress::new();
    let writer = write_frames(
        &mut sink,
        Some(&mut stdin),
        protocol,
        Duration::from_secs(3600),
        &progress,
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), writer)
            .await
            .is_err(),
        "the writer keeps going (pinging) after stdin"
    );
    assert_eq!(progress.stdin.load(Ordering::Relaxed), input.len() as u64);
    sent
}

#[tokio::test]
async fn stdin_goes_out_on_channel_zero_and_ends_with_close_on_v5() {
    let sent = write_all(b"abc", ExecProtocol::V5).await;
    assert_eq!(binaries(&sent), vec![b"\0abc".to_vec(), vec![CLOSE, STDIN]]);
}

#[tokio::test]
async fn stdin_on_v4_just_stops_because_v4_cannot_end_it() {
    let sent = write_all(b"abc", ExecProtocol::V4).await;
    assert_eq!(binaries(&sent), vec![b"\0abc".to_vec()]);
}

#[tokio::test]
async fn stdin_larger_than_a_frame_is_split_without_loss() {
    let input: Vec<u8> = (0..STDIN_CHUNK * 2 + 10).map(|i| (i % 253) as u8).collect();
    let sent = write_all(&input, ExecProtocol::V5).await;
    let frames = binaries(&sent);
    let (last, data) = frames.split_last().expect("frames");
    assert_eq!(last, &vec![CLOSE, STDIN]);
    assert!(
        data.iter()
            .all(|f| f[0] == STDIN && f.len() <= STDIN_CHUNK + 1)
    );
    let joined: Vec<u8> = data.iter().flat_map(|f| f[1..].to_vec()).collect();
    assert_eq!(joined, input);
}

fn frames(
    list: Vec<Result<Message, tungstenite::Error>>,
) -> impl Stream<Item = Result<Message, tungstenite::Error>> + Unpin {
    futures_util::stream::iter(list)
}

fn bin(channel: u8, data: &[u8]) -> Result<Message, tungstenite::Error> {
    let mut v = vec![channel];
    v.extend_from_slice(data);
    Ok(Message::Binary(v.into()))
}

#[tokio::test]
async fn frames_are_demultiplexed_until_the_status() {
    let mut stream = frames(vec![
        bin(STDOUT, b"out1"),
        bin(STDERR, b"err"),
        Ok(Message::Pong(Bytes::new())),
        bin(STDOUT, b"out2"),
        bin(STATUS, br#"{"status":"Success"}"#),
        bin(STDOUT, b"never read"),
    ]);
    let (tx, mut rx) = mpsc::channel(8);
    let mut stderr = Tail::new(100);
    let progress = Progress::new();
    let status = read_until_status(&mut stream, &tx, &mut stderr, &progress).await;
    assert_eq!(
        status.ok(),
        Some(Bytes::from_static(br#"{"status":"Success"}"#))
    );
    drop(tx);
    let mut out = Vec::new();
    while let Some(b) = rx.recv().await {
        out.extend_from_slice(&b);
    }
    assert_eq!(out, b"out1out2");
    assert_eq!(progress.stdout(), 8);
    assert_eq!(stderr.finish(), ("err".to_string(), false));
}

#[tokio::test]
async fn a_stream_without_a_status_is_never_a_success() {
    for ending in [
        vec![bin(STDOUT, b"partial")],
        vec![bin(STDOUT, b"partial"), Ok(Message::Close(None))],
        vec![
            bin(STDOUT, b"partial"),
            Err(tungstenite::Error::ConnectionClosed),
        ],
    ] {
        let mut stream = frames(ending);
        let (tx, _rx) = mpsc::channel(8);
        let mut stderr = Tail::new(100);
        let progress = Progress::new();
        let r = read_until_status(&mut stream, &tx, &mut stderr, &progress).await;
        assert!(matches!(r, Err(Ended::WithoutStatus(_))));
        assert_eq!(progress.stdout(), 7);
    }
}

#[tokio::test]
async fn a_dropped_output_reader_stops_the_stream() {
    let mut stream = frames(vec![bin(STDOUT, b"x"), bin(STATUS, b"{}")]);
    let (tx, rx) = mpsc::channel(8);
    drop(rx);
    let r = read_until_status(&mut stream, &tx, &mut Tail::new(10), &Progress::new()).await;
    assert!(matches!(r, Err(Ended::OutputDropped)));
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_waits_while_our_side_is_busy() {
    let progress = Progress::new();
    let idle = Duration::from_secs(10);
    {
        let _busy = progress.local_wait();
        let fired = tokio::time::timeout(Duration::from_secs(60), watchdog(&progress, idle));
        assert!(fired.await.is_err(), "fired while we were the slow side");
    }
    let started = Instant::now();
    watchdog(&progress, idle).await;
    assert!(started.elapsed() >= idle);
}

/// Compiles only if the stream future can be spawned (is `Send`).
fn _exec_stream_is_send<'a>(
    client: &'a Client,
    target: &'a ExecTarget,
    argv: &'a [String],
    input: &'a mut &'static [u8],
    stdout: mpsc::Sender<Bytes>,
    options: &'a ExecOptions,
) -> impl Future<Output = Result<ExecOutcome, ExecError>> + Send + 'a {
    exec_stream(client, target, argv, Some(input), stdout, options)
}

#[test]
fn long_commands_are_shortened_for_messages() {
    assert_eq!(short_command(&["tar", "-c"]), "tar -c");
    let long = short_command(&["x".repeat(200)]);
    assert_eq!(long.chars().count(), 80);
}
