use super::*;
use nkvm_domain::Allowlist;
use nkvm_policy::file::{Context, PolicySource, PolicySpec, validate};

fn policy(schedule: &str, deadline: u64) -> Policy {
    let allow = Allowlist::default();
    let stores = vec!["local".to_string()];
    validate(
        PolicySpec {
            name: "p".into(),
            schedule: schedule.into(),
            namespaces: vec!["shop".into()],
            starting_deadline_seconds: Some(deadline),
            ..Default::default()
        },
        PolicySource::File,
        &Context {
            allowlist: &allow,
            stores: &stores,
        },
    )
    .unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[test]
fn a_slot_missed_while_down_runs_once_within_the_deadline_else_is_missed() {
    let p = policy("0 2 * * *", 3600);
    let last = utc("2026-01-01T02:00:00Z");
    assert_eq!(
        due(&p, last, utc("2026-01-02T02:30:00Z")),
        [SlotAction::Run(utc("2026-01-02T02:00:00Z"))]
    );
    assert_eq!(
        due(&p, last, utc("2026-01-02T04:00:00Z")),
        [SlotAction::Missed(utc("2026-01-02T02:00:00Z"))]
    );
    assert_eq!(
        due(&p, last, utc("2026-01-04T02:10:00Z")),
        [
            SlotAction::Missed(utc("2026-01-02T02:00:00Z")),
            SlotAction::Missed(utc("2026-01-03T02:00:00Z")),
            SlotAction::Run(utc("2026-01-04T02:00:00Z")),
        ],
        "only the newest slot runs, once"
    );
    assert!(due(&p, last, utc("2026-01-02T01:59:59Z")).is_empty());
}

/// A clock the test moves.
struct TestClock(Mutex<DateTime<Utc>>);

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

fn set(clock: &TestClock, t: &str) {
    *clock.0.lock().unwrap() = utc(t);
}

#[tokio::test]
async fn ticks_run_each_slot_once_record_misses_and_survive_a_restart() {
    let history = Arc::new(History::in_memory().unwrap());
    let clock = Arc::new(TestClock(Mutex::new(utc("2026-01-01T00:00:30Z"))));
    let policies: SharedPolicies = Arc::new(RwLock::new(vec![policy("* * * * *", 90)]));
    let (ran_tx, mut ran) = tokio::sync::mpsc::unbounded_channel();
    let runner: Runner = Arc::new(move |p: Policy, slot: String| {
        let tx = ran_tx.clone();
        Box::pin(async move {
            tx.send(slot.clone()).unwrap();
            Ok(PolicyRunReport {
                policy: p.name,
                slot,
                ..Default::default()
            })
        })
    });
    let scheduler = |clock: Arc<TestClock>| {
        Scheduler::new(
            policies.clone(),
            history.clone(),
            Arc::new(HistoryLedger(history.clone())),
            clock,
            runner.clone(),
            None,
        )
    };
    let s = scheduler(clock.clone());
    assert!(s.tick().await.is_empty(), "no slot since the start yet");
    set(&clock, "2026-01-01T00:01:05Z");
    assert_eq!(
        s.tick().await,
        [("p".into(), SlotAction::Run(utc("2026-01-01T00:01:00Z")))]
    );
    assert!(
        s.tick().await.is_empty(),
        "a second tick in the same minute runs nothing"
    );
    let first = tokio::time::timeout(Duration::from_secs(5), ran.recv())
        .await
        .unwrap();
    assert_eq!(first.as_deref(), Some("2026-01-01T00:01:00Z"));
    // "Down" for four minutes: a new scheduler finds three slots missed and one still due.
    set(&clock, "2026-01-01T00:05:10Z");
    let restarted = scheduler(clock.clone());
    let decided = restarted.tick().await;
    assert_eq!(
        decided.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
        [
            SlotAction::Missed(utc("2026-01-01T00:02:00Z")),
            SlotAction::Missed(utc("2026-01-01T00:03:00Z")),
            SlotAction::Missed(utc("2026-01-01T00:04:00Z")),
            SlotAction::Run(utc("2026-01-01T00:05:00Z")),
        ]
    );
    let second = tokio::time::timeout(Duration::from_secs(5), ran.recv())
        .await
        .unwrap();
    assert_eq!(second.as_deref(), Some("2026-01-01T00:05:00Z"));
    let outcomes: Vec<String> = history
        .policy_runs(Some("p"), 10)
        .unwrap()
        .into_iter()
        .rev()
        .map(|r| format!("{} {}", r.slot, r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            "2026-01-01T00:01:00Z ran",
            "2026-01-01T00:02:00Z missed",
            "2026-01-01T00:03:00Z missed",
            "2026-01-01T00:04:00Z missed",
            "2026-01-01T00:05:00Z ran",
        ]
    );
}

#[tokio::test]
async fn a_policy_added_while_running_is_scheduled_and_each_scheduler_runs_its_clusters_only() {
    let history = Arc::new(History::in_memory().unwrap());
    let clock = Arc::new(TestClock(Mutex::new(utc("2026-01-01T00:00:30Z"))));
    let policies: SharedPolicies = Arc::default();
    let (ran_tx, mut ran) = tokio::sync::mpsc::unbounded_channel();
    let runner: Runner = Arc::new(move |p: Policy, slot: String| {
        let tx = ran_tx.clone();
        Box::pin(async move {
            tx.send(p.name.clone()).unwrap();
            Ok(PolicyRunReport {
                policy: p.name,
                slot,
                ..Default::default()
            })
        })
    });
    let scheduler = |cluster: Option<&str>| {
        Scheduler::new(
            policies.clone(),
            history.clone(),
            Arc::new(HistoryLedger(history.clone())),
            clock.clone(),
            runner.clone(),
            None,
        )
        .for_cluster(cluster.map(str::to_string))
    };
    let (home, far) = (scheduler(None), scheduler(Some("far")));
    assert!(home.tick().await.is_empty());
    // Added after the schedulers started, as the Policies page does.
    let mut remote = policy("* * * * *", 90);
    remote.name = "remote".into();
    remote.cluster = Some("far".into());
    policies
        .write()
        .unwrap()
        .extend([policy("* * * * *", 90), remote]);
    set(&clock, "2026-01-01T00:01:05Z");
    let home_ran = home.tick().await;
    let far_ran = far.tick().await;
    assert_eq!(
        home_ran.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["p"]
    );
    assert_eq!(
        far_ran.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["remote"]
    );
    let mut names = Vec::new();
    for _ in 0..2 {
        let name = tokio::time::timeout(Duration::from_secs(5), ran.recv())
            .await
            .unwrap();
        names.push(name.unwrap());
    }
    names.sort();
    assert_eq!(names, ["p", "remote"]);
}
