use super::*;
use crate::Settings;
use nkvm_history::History;

fn book(dir: &Path) -> PolicyBook {
    let history = Arc::new(History::in_memory().unwrap());
    let store = Arc::new(nkvm_store::LocalStore::new(dir.join("backups")));
    let ws = Arc::new(Workspace::new(history, store, Settings::default()));
    PolicyBook::new(ws, dir.join("remote"))
}

fn spec(name: &str) -> PolicySpec {
    PolicySpec {
        name: name.into(),
        schedule: "*/5 * * * *".into(),
        namespaces: vec!["shop".into()],
        ..Default::default()
    }
}

const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: far
  cluster: {server: 'https://127.0.0.1:1'}
users:
- name: u
  user: {token: t}
contexts:
- name: far-away
  context: {cluster: far, user: u}
current-context: far-away
";

#[test]
fn a_ui_policy_is_in_force_once_saved_and_gone_once_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let book = book(dir.path());
    let shared = book.shared();
    book.save_ui(spec("often"), "ui:admin").unwrap();
    assert_eq!(
        shared.read().unwrap().len(),
        1,
        "the scheduler's list sees it"
    );
    let mut changed = spec("often");
    changed.schedule = "0 3 * * *".into();
    book.save_ui(changed, "ui:admin").unwrap();
    assert_eq!(book.policies()[0].schedule.expr(), "0 3 * * *");
    let audit = book.workspace.history().recent_audit(5).unwrap();
    assert_eq!(audit[0].0, "policy.save");
    book.delete_ui("often", "ui:admin").unwrap();
    assert!(shared.read().unwrap().is_empty());
    assert!(
        book.delete_ui("often", "ui:admin")
            .unwrap_err()
            .contains("no UI policy")
    );
}

#[test]
fn form_problems_name_their_field_and_file_policies_cannot_be_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let book = book(dir.path());
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        "policies:\n- name: nightly\n  schedule: \"0 2 * * *\"\n  namespaces: [shop]\n",
    )
    .unwrap();
    book.load_file(Some(&file)).unwrap();
    let mut bad = spec("nightly");
    bad.schedule = "0 0 2 * * *".into();
    bad.notify = Some(nkvm_policy::Notify {
        webhook: "ftp://x".into(),
        on: Default::default(),
    });
    let problems = book.save_ui(bad, "ui:admin").unwrap_err();
    let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        ["name", "schedule/timezone", "notify.webhook"],
        "{problems:?}"
    );
    let mut far = spec("far");
    far.cluster = Some("nowhere".into());
    let problems = book.save_ui(far, "ui:admin").unwrap_err();
    assert_eq!(problems[0].0, "cluster");
    assert!(problems[0].1.contains("found: none"), "{problems:?}");
    assert_eq!(book.policies().len(), 1, "nothing saved");
    assert!(
        book.delete_ui("nightly", "ui:admin")
            .unwrap_err()
            .contains("policy file")
    );
}

#[test]
fn a_policy_may_name_a_context_of_a_kubeconfig_below_the_remote_directory() {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("remote");
    std::fs::create_dir_all(remote.join("..data")).unwrap();
    std::fs::write(remote.join("far.yaml"), KUBECONFIG).unwrap();
    std::fs::write(remote.join("notes.txt"), "not a kubeconfig").unwrap();
    let book = book(dir.path());
    let contexts = book.remote_contexts();
    assert_eq!(contexts.len(), 1);
    assert_eq!(contexts[0].name, "far-away");
    assert_eq!(contexts[0].server, "https://127.0.0.1:1");
    let mut far = spec("far");
    far.cluster = Some("far-away".into());
    book.save_ui(far, "ui:admin").unwrap();
    assert_eq!(book.policies()[0].cluster.as_deref(), Some("far-away"));
    let opts = book.connect_options("far-away").unwrap();
    assert_eq!(
        opts.kubeconfig.as_deref(),
        Some(remote.join("far.yaml").as_path())
    );
    assert!(book.connect_options("elsewhere").is_none());
}
