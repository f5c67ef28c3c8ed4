//! The registry with fake work: progress, cancels, shutdown.

use super::*;

fn registry() -> Jobs {
    Jobs::new(None)
}

fn submit_fake(
    jobs: &Jobs,
    n: usize,
    parallel: usize,
    work: impl Fn(usize, mpsc::UnboundedSender<Progress>, watch::Receiver<bool>) -> ItemEnd
    + Send
    + Sync
    + Clone
    + 'static,
) -> JobId {
    let targets = (0..n)
        .map(|i| ("shop".to_string(), format!("data-{i}"), Some(100)))
        .collect();
    let (job, cancels) = jobs
        .register(JobKind::Backup, "test", "fake".into(), targets)
        .unwrap();
    let slots = Arc::new(Semaphore::new(parallel));
    for (index, cancel) in cancels.into_iter().enumerate() {
        let work = work.clone();
        jobs.spawn_item(job, index, slots.clone(), cancel, move |tx, cancel| {
            let work = work.clone();
            async move {
                tokio::task::spawn_blocking(move || work(index, tx, cancel))
                    .await
                    .unwrap()
            }
        });
    }
    job
}

fn ok(index: usize) -> ItemEnd {
    ItemEnd {
        status: JobStatus::Succeeded,
        id: format!("id-{index}"),
        stage: Stage::Commit,
        failure_kind: None,
        bytes: 100,
        error: String::new(),
        artifact: format!("c/shop/data-{index}/x.tar.zst"),
    }
}

async fn until_finished(jobs: &Jobs, job: JobId) -> JobState {
    let mut idle = jobs.inner.in_flight.subscribe();
    tokio::time::timeout(Duration::from_secs(10), idle.wait_for(|n| *n == 0))
        .await
        .expect("jobs end in time")
        .unwrap();
    jobs.get(job).unwrap()
}

#[tokio::test]
async fn items_report_progress_and_end_with_their_results() {
    let jobs = registry();
    let mut events = jobs.subscribe();
    let job = submit_fake(&jobs, 2, 2, |i, tx, _| {
        let pvc = format!("shop/data-{i}");
        let id = format!("id-{i}");
        tx.send(Progress::Stage {
            pvc: pvc.clone(),
            id: id.clone(),
            stage: Stage::Stream,
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        tx.send(Progress::Bytes { pvc, id, read: 50 }).unwrap();
        ok(i)
    });
    let state = until_finished(&jobs, job).await;
    assert!(state.finished());
    for item in &state.items {
        assert_eq!(item.status, JobStatus::Succeeded);
        assert_eq!(item.bytes, 100);
        assert!(item.artifact.ends_with(".tar.zst"));
        assert_eq!(item.hint, "");
    }
    let mut saw_eta = false;
    while let Ok(e) = events.try_recv() {
        if let JobEvent::Item(item) = e
            && item.bytes == 50
        {
            assert!(item.rate.unwrap() > 0.0);
            saw_eta |= item.eta_seconds.is_some();
        }
    }
    assert!(saw_eta, "a half-done item with a known size has an ETA");
}

#[tokio::test]
async fn a_cancelled_queued_item_never_runs_and_says_so() {
    let jobs = registry();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let job = submit_fake(&jobs, 2, 1, move |i, _, _| {
        if i == 0 {
            let _ = release_rx.lock().unwrap().recv();
        }
        ok(i)
    });
    // Item 0 holds the only slot, so item 1 is queued until it is released.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(jobs.get(job).unwrap().items[1].status, JobStatus::Queued);
    assert!(jobs.cancel(job, Some(1)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    release_tx.send(()).unwrap();
    let state = until_finished(&jobs, job).await;
    assert_eq!(state.items[0].status, JobStatus::Succeeded);
    assert_eq!(state.items[1].status, JobStatus::Cancelled);
    assert!(state.items[1].hint.contains("Start it again"));
    assert!(!jobs.cancel(job + 100, None), "no such job");
}

#[tokio::test]
async fn shutdown_cancels_what_outlives_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = Workspace::new(
        Arc::new(nkvm_history::History::in_memory().unwrap()),
        Arc::new(nkvm_store::LocalStore::new(dir.path())),
        crate::Settings::default(),
    );
    let jobs = registry();
    let job = submit_fake(&jobs, 1, 1, |_, _, mut cancel| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async { cancel.wait_for(|c| *c).await.map(|_| ()) })
            .unwrap();
        ItemEnd {
            status: JobStatus::Cancelled,
            ..ItemEnd::refused(
                Stage::Stream,
                FailureKind::Cancelled,
                "cancelled on request".into(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = jobs
        .shutdown(
            Duration::from_millis(50),
            Duration::from_secs(5),
            &workspace,
        )
        .await;
    assert_eq!(report.cancelled, 1);
    assert!(report.interrupted.is_empty());
    assert_eq!(jobs.get(job).unwrap().items[0].status, JobStatus::Cancelled);
    let late = jobs.register(
        JobKind::Backup,
        "test",
        String::new(),
        vec![("shop".into(), "late".into(), None)],
    );
    assert!(matches!(late, Err(SubmitError::ShuttingDown)));
}
