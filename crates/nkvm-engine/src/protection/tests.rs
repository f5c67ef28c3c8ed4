use super::*;
use nkvm_domain::{Allowlist, Owner};
use nkvm_policy::file::{Context, PolicySource, PolicySpec, Selector, validate};

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn policy(name: &str, schedule: &str, labels: &[(&str, &str)]) -> Policy {
    let allow = Allowlist::default();
    let stores = vec!["local".to_string()];
    validate(
        PolicySpec {
            name: name.into(),
            schedule: schedule.into(),
            namespaces: vec!["shop".into()],
            selector: Some(Selector {
                match_labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
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

fn claim(name: &str, tier: &str, success: Option<&str>, failure: Option<&str>) -> PvcRecord {
    PvcRecord {
        namespace: "shop".into(),
        name: name.into(),
        uid: name.into(),
        phase: "Bound".into(),
        capacity: "1Gi".into(),
        storage_class: String::new(),
        access_modes: vec![],
        volume_mode: "Filesystem".into(),
        volume_name: String::new(),
        owner: Owner::unknown(),
        consumers: vec![],
        last_successful_backup: success.map(str::to_string),
        last_failed_backup: failure.map(str::to_string),
        backupable: true,
        reason: String::new(),
        labels: [("tier".to_string(), tier.to_string())].into(),
    }
}

#[test]
fn a_nightly_slot_is_due_once_its_hour_of_grace_has_passed() {
    let s = Schedule::parse("0 2 * * *", "UTC").unwrap();
    assert_eq!(grace(&s, utc("2026-03-10T02:00:00Z")), MAX_GRACE);
    assert_eq!(
        due_slot(&s, utc("2026-03-10T02:59:59Z")),
        Some(utc("2026-03-09T02:00:00Z")),
        "during the grace the night before is still the one asked for"
    );
    assert_eq!(
        due_slot(&s, utc("2026-03-10T03:00:00Z")),
        Some(utc("2026-03-10T02:00:00Z"))
    );
}

#[test]
fn a_per_minute_slot_gets_a_minute_and_weekends_do_not_count_against_weekdays() {
    let s = Schedule::parse("* * * * *", "UTC").unwrap();
    assert_eq!(grace(&s, utc("2026-03-10T10:05:00Z")), Duration::minutes(1));
    assert_eq!(
        due_slot(&s, utc("2026-03-10T10:05:30Z")),
        Some(utc("2026-03-10T10:04:00Z"))
    );
    // Monday 2026-03-09, weekdays at 02:00: on Monday 01:00 Friday's slot is the one due.
    let weekdays = Schedule::parse("0 2 * * 1-5", "UTC").unwrap();
    assert_eq!(
        due_slot(&weekdays, utc("2026-03-09T01:00:00Z")),
        Some(utc("2026-03-06T02:00:00Z"))
    );
}

#[test]
fn each_claim_gets_the_first_state_that_applies() {
    let policies = [
        policy("nightly", "0 2 * * *", &[("tier", "db")]),
        policy("hourly", "0 * * * *", &[("tier", "web")]),
    ];
    let now = utc("2026-03-10T10:30:00Z");
    let records = [
        claim("fresh", "db", Some("2026-03-10T02:05:00Z"), None),
        claim("old", "db", Some("2026-03-09T02:05:00Z"), None),
        claim(
            "broken",
            "db",
            Some("2026-03-10T02:05:00Z"),
            Some("2026-03-10T02:06:00Z"),
        ),
        claim("new", "db", None, None),
        claim("loose", "cache", Some("2026-03-10T02:05:00Z"), None),
        // Hourly: 09:00 is due at 10:30 (10:00's grace lasts to 11:00).
        claim("web", "web", Some("2026-03-10T09:10:00Z"), None),
        claim("web-late", "web", Some("2026-03-10T08:10:00Z"), None),
    ];
    let report = ProtectionReport::of(&records, &policies, now);
    let states: Vec<(&str, Protection)> = report
        .claims
        .iter()
        .map(|c| (c.pvc.as_str(), c.state))
        .collect();
    assert_eq!(
        states,
        [
            ("fresh", Protection::Protected),
            ("old", Protection::Stale),
            ("broken", Protection::Failing),
            ("new", Protection::Never),
            ("loose", Protection::Uncovered),
            ("web", Protection::Protected),
            ("web-late", Protection::Stale),
        ]
    );
    assert_eq!(report.count(Protection::Protected), 2);
    assert_eq!(
        report.claims[1].due_since.as_deref(),
        Some("2026-03-10T02:00:00Z")
    );
    assert_eq!(report.claims[5].policies, ["hourly"]);
    assert_eq!(Protection::parse("never"), Some(Protection::Never));
}
