//! Backup and restore side by side on ~1.5 GiB mixing incompressible data, tens of thousands
//! of small text files and database-like pages, in one sandbox, three interleaved rounds,
//! median reported: the local limit (`tar | zstd -3 -T0`, `zstd -d | tar -x`), the best
//! shell pipeline through the same API (`kubectl exec ... tar | zstd`), `kubectl cp`, nkvm
//! with the agent (nkvm's own helper image) and nkvm with a generic helper image. For each:
//! wall seconds, CPU seconds of the client side (nkvm, or the shell pipeline), of the sandbox
//! process itself (API server, TLS, exec framing) and of the pod's processes (tar, the
//! agent), and the client's peak RSS. Goals (issue #16): >= 0.85x the local limit, >= 1.2x the
//! shell pipeline, >= 3x `kubectl cp`, nkvm's peak RSS < 64 MiB. Five more backup rows send
//! the agent's archive to real S3 servers on loopback, over this machine's disk, uploaded by
//! the agent itself (`direct`; once also sealed with age for an encrypted store) and through
//! nkvm: `s3s-fs` (the tests' small reference server) and Versity's gateway `versitygw` (a
//! production S3 server). Goal (issue #14): >= 0.8x the local store's throughput with nkvm's
//! peak RSS < 96 MiB. Each S3 row also reports the server's own CPU seconds, since the server
//! shares this machine's cores.
//!
//! Then the scale-out run: the same corpus split over 8 claims whose pods run 4 on `node-a` and
//! 4 on `node-b`, backed up at once (`--parallel 8`) to S3, direct and through nkvm, and one of
//! those claims alone: nkvm's CPU and peak RSS show whether nkvm's pod stays flat while the
//! helpers do the work. `NKVM_BENCH_SKIP_SCALE_OUT=1` leaves it out.
//!
//! Run: `cargo bench -p nkvm --bench backup` (needs GNU `time` at /usr/bin/time, kubectl,
//! zstd, and both S3 servers from `scripts/install-store-test-deps.sh`). `NKVM_BENCH_SCALE` (default 1.0) scales the corpus; `NKVM_BENCH_SKIP_RESTORE=1`
//! measures backups only. Everything it writes lives in
//! one temporary directory, removed at the end; restored copies are removed as they are
//! measured.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const ROUNDS: usize = 3;
/// The backup rows that go to S3 (they follow the others): per row, the store it names and
/// which server holds that store (an index into `Bench::s3`). The `direct` rows' archives are
/// uploaded by the agent itself (like row 3's, which go to `local`), the others' through nkvm.
const S3_ROWS: [(&str, &str, usize); 5] = [
    ("nkvm (direct) to s3s-fs", "offsite", 0),
    ("nkvm (via nkvm) to s3s-fs", "offsite-via", 0),
    ("nkvm (direct) to versitygw", "gateway", 1),
    ("nkvm (via nkvm) to versitygw", "gateway-via", 1),
    ("nkvm (direct, age) to versitygw", "gateway-age", 1),
];
/// The public key `gateway-age` encrypts to (its identity is not kept: the bench never
/// decrypts).
const AGE_RECIPIENT: &str = "age1lkrlaxlpp035l9uj2x7dnwdjg2pduvztal9xhl6009aa7ljw098quazyjl";
/// The first of the `S3_ROWS`.
const FIRST_S3_ROW: usize = 5;
const GENERIC: &str = "docker.io/library/debian:bookworm-slim";

fn sh(script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fields of /proc/PID/stat after the command name.
fn stat_fields(pid: &str) -> Vec<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    rest.split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect()
}

/// CPU seconds (user + system) a process has used itself, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let f = stat_fields(&pid.to_string());
    // utime and stime are fields 14 and 15: 11 and 12 after the name.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// The command name of a process, from /proc.
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_default()
}

/// CPU seconds of the pods' processes: their sum and, per program (`tar`, `nkvm`, `zstd`...),
/// where it went.
#[derive(Debug, Clone, Default)]
struct PodCpu {
    total: f64,
    by_program: Vec<(String, f64)>,
}

/// Samples, every 50 ms until `stop`, the CPU of every process below `root` (the pods'
/// processes: bwrap, tar, the agent).
fn pods_cpu(root: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<PodCpu> {
    std::thread::spawn(move || {
        let mut seen: HashMap<u32, (String, f64)> = HashMap::new();
        loop {
            let mut parent: HashMap<u32, (u32, f64)> = HashMap::new();
            for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Ok(pid) = name.parse::<u32>() {
                    let f = stat_fields(&name);
                    let cpu = (f.get(11).copied().unwrap_or(0.0)
                        + f.get(12).copied().unwrap_or(0.0))
                        / 100.0;
                    parent.insert(pid, (f.get(1).copied().unwrap_or(0.0) as u32, cpu));
                }
            }
            for (&pid, &(_, cpu)) in &parent {
                let mut up = parent.get(&pid).map_or(0, |p| p.0);
                while up > 1 && up != root {
                    up = parent.get(&up).map_or(0, |p| p.0);
                }
                if up == root {
                    let best = seen.entry(pid).or_insert_with(|| (comm(pid), 0.0));
                    best.1 = best.1.max(cpu);
                }
            }
            if stop.load(Ordering::Relaxed) {
                let mut by: HashMap<String, f64> = HashMap::new();
                for (name, cpu) in seen.into_values() {
                    *by.entry(name).or_default() += cpu;
                }
                let mut by_program: Vec<(String, f64)> =
                    by.into_iter().filter(|(_, cpu)| *cpu >= 0.05).collect();
                by_program.sort_by(|a, b| b.1.total_cmp(&a.1));
                let total = by_program.iter().map(|p| p.1).sum();
                return PodCpu { total, by_program };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// One measured run.
#[derive(Debug, Clone, Default)]
struct Run {
    wall: f64,
    client_cpu: f64,
    sandbox_cpu: f64,
    pod_cpu: f64,
    pod_programs: Vec<(String, f64)>,
    peak_mib: f64,
}

/// Runs `script` under GNU time, with the sandbox's CPU before and after.
fn measure(script: &str, sandbox: u32) -> Run {
    let report = tempfile::NamedTempFile::new().expect("temp file");
    let own0 = cpu_seconds(sandbox);
    let stop = Arc::new(AtomicBool::new(false));
    let pods = pods_cpu(sandbox, stop.clone());
    let started = Instant::now();
    let status = Command::new("/usr/bin/time")
        .args(["-f", "%U %S %M", "-o"])
        .arg(report.path())
        .args(["bash", "-c", script])
        .stdout(Stdio::null())
        .status()
        .expect("/usr/bin/time runs (Debian package `time`)");
    let wall = started.elapsed().as_secs_f64();
    assert!(status.success(), "`{script}` failed");
    stop.store(true, Ordering::Relaxed);
    let pods = pods.join().expect("sampler");
    let own1 = cpu_seconds(sandbox);
    let text = std::fs::read_to_string(report.path()).expect("time's report");
    let v: Vec<f64> = text
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    Run {
        wall,
        client_cpu: v[0] + v[1],
        sandbox_cpu: own1 - own0,
        pod_cpu: pods.total,
        pod_programs: pods.by_program,
        peak_mib: v[2] / 1024.0,
    }
}

/// A small deterministic generator (xorshift) for the corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Log-like text: timestamps, ids, paths and counters that vary line by line.
fn text_file(rng: &mut Rng, bytes: usize) -> Vec<u8> {
    const LEVELS: [&str; 4] = ["INFO", "INFO", "WARN", "DEBUG"];
    const PATHS: [&str; 5] = ["items", "orders", "users", "carts", "search"];
    let mut out = Vec::with_capacity(bytes + 200);
    while out.len() < bytes {
        let r = rng.next();
        out.extend_from_slice(
            format!(
                "2026-12-07T{:02}:{:02}:{:02}.{:03}Z {} req={:016x} GET /api/v1/{}/{} status={} bytes={} dur_ms={}\n",
                r % 24,
                (r >> 5) % 60,
                (r >> 11) % 60,
                (r >> 17) % 1000,
                LEVELS[(r >> 27) as usize % 4],
                rng.next() >> 16,
                PATHS[(r >> 29) as usize % 5],
                (r >> 32) % 100_000,
                if r.is_multiple_of(17) { 404 } else { 200 },
                (r >> 40) % 65_536,
                (r >> 48) % 900,
            )
            .as_bytes(),
        );
    }
    out
}

/// A database-like file: 8 KiB pages with a header, rows of numbers and short words filling
/// about 70% of each page, and zeroed free space.
fn db_file(rng: &mut Rng, pages: usize) -> Vec<u8> {
    const WORDS: [&str; 6] = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let mut out = vec![0u8; pages * 8192];
    for (n, page) in out.chunks_mut(8192).enumerate() {
        page[..8].copy_from_slice(&(n as u64).to_le_bytes());
        page[8..16].copy_from_slice(&rng.next().to_le_bytes());
        let mut at = 24;
        while at + 120 < 8192 * 7 / 10 {
            let r = rng.next();
            let row = format!(
                "{:08}|{}|{}|{:.2}|",
                r % 10_000_000,
                WORDS[(r >> 24) as usize % 6],
                WORDS[(r >> 28) as usize % 6],
                (r >> 32) as f64 / 1e6
            );
            page[at..at + row.len()].copy_from_slice(row.as_bytes());
            at += row.len() + 8;
        }
    }
    out
}

/// Fills `dir` with the corpus; returns its apparent MiB.
fn make_corpus(dir: &Path, scale: f64) -> f64 {
    let mib = |n: f64| ((n * scale) as u64) << 20;
    sh(&format!(
        "head -c {} /dev/urandom > {}/random.bin",
        mib(640.0),
        dir.display()
    ));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let files = (30_000.0 * scale) as usize;
    for i in 0..files {
        let sub = dir.join(format!("logs/{:03}", i / 1000));
        std::fs::create_dir_all(&sub).expect("mkdir");
        let body = text_file(&mut rng, 14_000);
        std::fs::write(sub.join(format!("app-{i:05}.log")), body).expect("write");
    }
    std::fs::create_dir_all(dir.join("db")).expect("mkdir");
    for i in 0..8 {
        let pages = (mib(64.0) / 8192) as usize;
        std::fs::write(
            dir.join(format!("db/table{i}.dat")),
            db_file(&mut rng, pages),
        )
        .expect("write");
    }
    sh(&format!(
        "du -sb --apparent-size {} | cut -f1",
        dir.display()
    ))
    .trim()
    .parse::<f64>()
    .unwrap_or(0.0)
        / f64::from(1 << 20)
}

/// The sandbox, its files, and how to run kubectl and nkvm against it.
struct Bench {
    nkvm: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    sandbox: std::process::Child,
    /// `s3s-fs` and `versitygw`.
    s3: [nkvm_store::testing::S3Server; 2],
    stores_file: PathBuf,
}

/// The S3 servers and a stores file naming each twice: `offsite` and `gateway` (direct
/// uploads), `offsite-via` and `gateway-via` (through nkvm, under another prefix); and
/// `gateway-age`, encrypted (the agent seals the archive with age on a direct upload).
fn s3_stores(dir: &Path) -> ([nkvm_store::testing::S3Server; 2], PathBuf) {
    use nkvm_store::testing::{ACCESS_KEY, S3Kind, S3Server, SECRET_KEY};
    let servers = [
        S3Server::start_kind(S3Kind::S3sFs, &dir.join("s3s-fs")),
        S3Server::start_kind(S3Kind::Versitygw, &dir.join("versitygw")),
    ];
    std::fs::write(dir.join("s3-key-id"), ACCESS_KEY).expect("write");
    std::fs::write(dir.join("s3-secret"), SECRET_KEY).expect("write");
    let mut yaml = String::from("stores:\n");
    let sealed = format!("  prefix: age/\n  encryption: {{ageRecipients: [{AGE_RECIPIENT}]}}\n");
    for (name, server) in ["offsite", "gateway"].into_iter().zip(&servers) {
        let mut entries = vec![
            ("", String::new()),
            ("-via", "  prefix: via/\n  directUpload: false\n".into()),
        ];
        if name == "gateway" {
            entries.push(("-age", sealed.clone()));
        }
        for (suffix, extra) in entries {
            yaml += &format!(
                "- name: {name}{suffix}\n  type: s3\n  endpoint: {}\n  region: us-east-1\n  bucket: nkvm\n{extra}  accessKeyIdFile: {}\n  secretAccessKeyFile: {}\n",
                server.endpoint(),
                dir.join("s3-key-id").display(),
                dir.join("s3-secret").display()
            );
        }
    }
    let file = dir.join("stores.yaml");
    std::fs::write(&file, yaml).expect("write");
    (servers, file)
}

impl Bench {
    fn start() -> Bench {
        let nkvm = env!("CARGO_BIN_EXE_nkvm").to_string();
        let dir = tempfile::Builder::new()
            .prefix("nkvm-bench-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let kubeconfig = dir.join("kubeconfig");
        let sandbox = Command::new(&nkvm)
            .args(["sandbox", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir.join("state"))
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .env("NKVM_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("sandbox starts");
        let started = Instant::now();
        while !kubeconfig.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "sandbox not ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let (s3, stores_file) = s3_stores(&dir);
        Bench {
            nkvm,
            dir,
            kubeconfig,
            sandbox,
            s3,
            stores_file,
        }
    }

    fn kubectl(&self) -> String {
        format!(
            "{} --kubeconfig {} -n default",
            kube_sandbox::testing::kubectl_program(),
            self.kubeconfig.display()
        )
    }

    fn nkvm(&self, image: Option<&str>) -> String {
        let image = image.map_or(String::new(), |i| format!(" --helper-image {i}"));
        format!(
            "NKVM_LOG=warn {} --kubeconfig {} --db {} --backup-dir {} --stores {}{image}",
            self.nkvm,
            self.kubeconfig.display(),
            self.dir.join("db").display(),
            self.dir.join("backups").display(),
            self.stores_file.display()
        )
    }

    /// A claim and a pod mounting it at /data; returns the claim's host directory.
    fn claim_with_pod(&self, name: &str) -> PathBuf {
        self.claim_with_pod_on(name, "node-a")
    }

    /// A claim and a pod on `node` mounting it at /data (a ReadWriteOnce claim's helper then
    /// runs on that node too); returns the claim's host directory.
    fn claim_with_pod_on(&self, name: &str, node: &str) -> PathBuf {
        let yaml = format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 10Gi}}}}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: busybox, command: [sleep, infinity], volumeMounts: [{{name: d, mountPath: /data}}]}}]\n  volumes: [{{name: d, persistentVolumeClaim: {{claimName: {name}}}}}]\n"
        );
        let file = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).expect("write");
        let k = self.kubectl();
        sh(&format!("{k} apply -f {}", file.display()));
        sh(&format!(
            "{k} wait --for=condition=Ready pod/{name} --timeout=60s"
        ));
        self.volume_dir(name)
    }

    fn volume_dir(&self, claim: &str) -> PathBuf {
        let volume = sh(&format!(
            "{} get pvc {claim} -o jsonpath={{.spec.volumeName}}",
            self.kubectl()
        ));
        self.dir.join("state/volumes").join(volume.trim())
    }

    /// Deletes a restored claim and its data at once (disk is limited).
    fn drop_claim(&self, claim: &str) {
        let dir = self.volume_dir(claim);
        sh(&format!(
            "{} delete pvc {claim} --wait=false",
            self.kubectl()
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Backup commands, by name; the archive each writes is removed after measuring.
fn backup_commands(b: &Bench, source: &Path) -> Vec<(&'static str, String)> {
    let out = b.dir.join("out.tar.zst");
    let k = b.kubectl();
    vec![
        (
            "local tar | zstd -3 -T0",
            format!(
                "tar -cf - -C {} . | zstd -3 -T0 -q > {}",
                source.display(),
                out.display()
            ),
        ),
        (
            "kubectl exec tar | zstd -3 -T0",
            format!(
                "{k} exec app -- tar -cf - -C /data . | zstd -3 -T0 -q > {}",
                out.display()
            ),
        ),
        (
            "kubectl cp",
            format!(
                "{k} cp app:/data {} >/dev/null 2>&1",
                b.dir.join("cp").display()
            ),
        ),
        (
            "nkvm backup (agent)",
            format!("{} backup default/app -o json", b.nkvm(None)),
        ),
        (
            "nkvm backup (generic image)",
            format!("{} backup default/app -o json", b.nkvm(Some(GENERIC))),
        ),
    ]
    .into_iter()
    .chain(S3_ROWS.iter().map(|(name, store, _)| {
        (
            *name,
            format!(
                "{} backup default/app --store {store} -o json",
                b.nkvm(None)
            ),
        )
    }))
    .collect()
}

/// Restore commands into fresh targets, by name.
fn restore_commands(
    b: &Bench,
    id: &str,
    archive: &Path,
    round: usize,
) -> Vec<(&'static str, String)> {
    let k = b.kubectl();
    let local = b.dir.join("local-restore");
    vec![
        (
            "local zstd -d | tar -x",
            format!(
                "mkdir -p {0} && zstd -d -c -q {1} | tar -x --numeric-owner -C {0}",
                local.display(),
                archive.display()
            ),
        ),
        (
            "zstd -d | kubectl exec tar -x",
            format!(
                "zstd -d -c -q {} | {k} exec -i sink -- tar -x --numeric-owner -C /data",
                archive.display()
            ),
        ),
        (
            "kubectl cp (of the tree)",
            format!(
                "{k} cp {} sink:/data/cp >/dev/null 2>&1",
                b.dir.join("tree").display()
            ),
        ),
        (
            "nkvm restore (agent)",
            format!(
                "{} restore {id} --to default/ra{round} --create -o json",
                b.nkvm(None)
            ),
        ),
        (
            "nkvm restore (generic image)",
            format!(
                "{} restore {id} --to default/rg{round} --create -o json",
                b.nkvm(Some(GENERIC))
            ),
        ),
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Prints one table: per command, the median of each column over the rounds.
fn table(title: &str, names: &[&str], runs: &[Vec<Run>], mib: f64) {
    println!("\n{title} ({ROUNDS} interleaved rounds, median)");
    println!(
        "{:<32} {:>8} {:>8} {:>10} {:>11} {:>9} {:>9}",
        "command", "wall s", "MiB/s", "client CPU", "sandbox CPU", "pod CPU", "peak MiB"
    );
    for (i, name) in names.iter().enumerate() {
        let col = |f: fn(&Run) -> f64| median(runs.iter().map(|r| f(&r[i])).collect());
        let wall = col(|r| r.wall);
        println!(
            "{name:<32} {wall:>8.2} {:>8.0} {:>10.2} {:>11.2} {:>9.2} {:>9.1}",
            mib / wall,
            col(|r| r.client_cpu),
            col(|r| r.sandbox_cpu),
            col(|r| r.pod_cpu),
            col(|r| r.peak_mib)
        );
    }
    println!("where the pods' CPU went (median round's CPU seconds per program):");
    for (i, name) in names.iter().enumerate() {
        let mut by_total: Vec<&Run> = runs.iter().map(|r| &r[i]).collect();
        by_total.sort_by(|a, b| a.pod_cpu.total_cmp(&b.pod_cpu));
        let programs: Vec<String> = by_total[by_total.len() / 2]
            .pod_programs
            .iter()
            .map(|(p, cpu)| format!("{p} {cpu:.2}"))
            .collect();
        if !programs.is_empty() {
            println!("  {name:<32} {}", programs.join(", "));
        }
    }
    let wall = |n: usize| median(runs.iter().map(|r| r[n].wall).collect());
    for (n, label) in [(3, "agent"), (4, "generic")] {
        println!(
            "nkvm ({label}): {:.2}x the local limit (goal >= 0.85), {:.2}x the shell pipeline (goal >= 1.2), {:.2}x kubectl cp (goal >= 3)",
            wall(0) / wall(n),
            wall(1) / wall(n),
            wall(2) / wall(n)
        );
    }
}

/// The newest backup's id and archive path.
fn newest_backup(b: &Bench) -> (String, PathBuf) {
    let listed = sh(&format!("{} backups -o json", b.nkvm(None)));
    let rows: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let id = rows[0]["id"].as_str().expect("id").to_string();
    let artifact = b
        .dir
        .join("backups")
        .join(rows[0]["artifact"].as_str().expect("artifact"));
    (id, artifact)
}

fn backups(b: &Bench, source: &Path, mib: f64) -> (String, PathBuf) {
    let commands = backup_commands(b, source);
    let mut runs = Vec::new();
    let mut kept = None;
    let mut s3_server_cpu = vec![Vec::new(); S3_ROWS.len()];
    for round in 0..ROUNDS {
        let mut r = vec![Run::default(); commands.len()];
        // Interleaved: each round starts one command later.
        for k in 0..commands.len() {
            let i = (k + round) % commands.len();
            let server = i
                .checked_sub(FIRST_S3_ROW)
                .map(|row| (row, &b.s3[S3_ROWS[row].2]));
            let server_cpu = |s: &nkvm_store::testing::S3Server| s.pid().map_or(0.0, cpu_seconds);
            let server_before = server.map_or(0.0, |(_, s)| server_cpu(s));
            r[i] = measure(&commands[i].1, b.sandbox.id());
            let _ = std::fs::remove_file(b.dir.join("out.tar.zst"));
            let _ = std::fs::remove_dir_all(b.dir.join("cp"));
            if let Some((row, s)) = server {
                s3_server_cpu[row].push(server_cpu(s) - server_before);
                s.empty_bucket();
            } else if i >= 3 {
                let (id, archive) = newest_backup(b);
                if kept.is_none() && i == 3 {
                    kept = Some((id, archive));
                } else {
                    let _ = std::fs::remove_file(archive);
                }
            }
        }
        runs.push(r);
    }
    let names: Vec<&str> = commands.iter().map(|c| c.0).collect();
    table("backup", &names, &runs, mib);
    let col = |n: usize, f: fn(&Run) -> f64| median(runs.iter().map(|r| f(&r[n])).collect());
    for (n, cpu) in s3_server_cpu.into_iter().enumerate() {
        let row = FIRST_S3_ROW + n;
        println!(
            "{}: {:.2}x the local store's throughput (goal >= 0.8), nkvm's peak RSS {:.1} MiB (goal < 96); the S3 server, on the same cores, used {:.2} CPU s",
            commands[row].0,
            col(3, |r| r.wall) / col(row, |r| r.wall),
            col(row, |r| r.peak_mib),
            median(cpu)
        );
    }
    kept.expect("an agent backup was kept")
}

fn restores(b: &Bench, id: &str, archive: &Path, mib: f64) {
    let sink = b.claim_with_pod("sink");
    // The tree `kubectl cp` uploads: the archive extracted locally once.
    sh(&format!(
        "mkdir -p {0} && zstd -d -c -q {1} | tar -x -C {0}",
        b.dir.join("tree").display(),
        archive.display()
    ));
    let mut runs = Vec::new();
    for round in 0..ROUNDS {
        let commands = restore_commands(b, id, archive, round);
        let mut r = vec![Run::default(); commands.len()];
        for k in 0..commands.len() {
            let i = (k + round) % commands.len();
            r[i] = measure(&commands[i].1, b.sandbox.id());
            match i {
                0 => drop(std::fs::remove_dir_all(b.dir.join("local-restore"))),
                1 | 2 => sh(&format!("find {} -mindepth 1 -delete", sink.display())).truncate(0),
                3 => b.drop_claim(&format!("ra{round}")),
                _ => b.drop_claim(&format!("rg{round}")),
            }
        }
        runs.push(r);
    }
    let names: Vec<&str> = restore_commands(b, id, archive, 0)
        .iter()
        .map(|c| c.0)
        .collect();
    table("restore", &names, &runs, mib);
    println!(
        "(nkvm restore includes its plan, which reads the whole archive back: sha256, tar structure, member paths)"
    );
}

/// Claims of the scale-out run.
const SPREAD: usize = 8;

/// The scale-out run (see the module docs): one round each, since each backs up the whole
/// corpus again.
fn scale_out(b: &Bench, scale: f64) {
    let mut mib = 0.0;
    for i in 0..SPREAD {
        let node = if i % 2 == 0 { "node-a" } else { "node-b" };
        let dir = b.claim_with_pod_on(&format!("s{i}"), node);
        mib += make_corpus(&dir, scale / SPREAD as f64);
    }
    sh("sync");
    let all: Vec<String> = (0..SPREAD).map(|i| format!("default/s{i}")).collect();
    let runs: Vec<(String, String, f64)> = [
        ("direct, 8 claims at once", "offsite", all.join(" "), mib),
        ("through nkvm, 8 claims", "offsite-via", all.join(" "), mib),
        (
            "direct, 1 claim (s0)",
            "offsite",
            all[0].clone(),
            mib / SPREAD as f64,
        ),
    ]
    .into_iter()
    .map(|(name, store, claims, mib)| {
        (
            name.to_string(),
            format!(
                "{} backup {claims} --parallel {SPREAD} --store {store} -o json",
                b.nkvm(None)
            ),
            mib,
        )
    })
    .collect();
    println!(
        "\nscale-out: {mib:.0} MiB over {SPREAD} claims, pods 4 on node-a and 4 on node-b, to S3 (s3s-fs; one round each)"
    );
    println!(
        "{:<28} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "run", "wall s", "MiB/s", "nkvm CPU", "nkvm MiB", "pod CPU", "sandbox", "S3 CPU"
    );
    for (name, script, mib) in runs {
        let s3 = &b.s3[0];
        let server_before = s3.pid().map_or(0.0, cpu_seconds);
        let r = measure(&script, b.sandbox.id());
        let server = s3.pid().map_or(0.0, cpu_seconds) - server_before;
        s3.empty_bucket();
        println!(
            "{name:<28} {:>8.2} {:>8.0} {:>9.2} {:>9.1} {:>9.2} {:>9.2} {:>9.2}",
            r.wall,
            mib / r.wall,
            r.client_cpu,
            r.peak_mib,
            r.pod_cpu,
            r.sandbox_cpu,
            server
        );
    }
    for i in 0..SPREAD {
        b.drop_claim(&format!("s{i}"));
    }
}

fn main() {
    let scale: f64 = std::env::var("NKVM_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let mut b = Bench::start();
    let source = b.claim_with_pod("app");
    let mib = make_corpus(&source, scale);
    println!(
        "corpus: {mib:.0} MiB apparent: {:.0} MiB random, {} log files of 14 KB, {:.0} MiB of 8 KiB database pages; {} cores",
        640.0 * scale,
        (30_000.0 * scale) as usize,
        512.0 * scale,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    sh("sync");
    let (id, archive) = backups(&b, &source, mib);
    let stored = std::fs::metadata(&archive).map_or(0, |m| m.len()) as f64 / f64::from(1 << 20);
    println!("nkvm's archive: {stored:.0} MiB");
    if std::env::var_os("NKVM_BENCH_SKIP_RESTORE").is_none() {
        restores(&b, &id, &archive, mib);
    }
    if std::env::var_os("NKVM_BENCH_SKIP_SCALE_OUT").is_none() {
        scale_out(&b, scale);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &b.sandbox.id().to_string()])
        .status();
    let _ = b.sandbox.wait();
    let _ = std::fs::remove_dir_all(&b.dir);
}
