//! High availability on etcd: several `berth controller` processes on one
//! 3-member etcd cluster (on loopback), one leader among them, bases and
//! the CLI with a list of controllers; leaders killed, etcd members killed,
//! a controller cut off from etcd, everything restarted; `berth store copy`.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use berth_example_modules::{HELLO, HELLO_V2};

use crate::etcd_server::EtcdCluster;
use crate::support::{
    BaseProcess, apply_command, berth, controller_command, failure, file_digest, spawn_controller,
    stdout, work_dir, write_deployment,
};

/// The leader TTL the tests run with (etcd's smallest on its defaults).
const TTL: Duration = Duration::from_secs(2);

/// A `berth controller` process, SIGKILLed on drop.
struct Ctl {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
}

impl Ctl {
    /// A controller named `name` (its data dir) on `store`.
    fn start(work: &Path, name: &str, store: &str) -> Self {
        Self::start_on(work, name, store, 0)
    }

    fn start_on(work: &Path, name: &str, store: &str, port: u16) -> Self {
        let extra = ["--store", store, "--leader-ttl", "2s"];
        let (child, addr) = spawn_controller(port, &work.join(name), &extra, &[]);
        Self { child, addr }
    }

    fn port(&self) -> u16 {
        self.addr.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    /// What `GET /v1/leader` says, if it answers.
    fn leader(&self) -> Option<serde_json::Value> {
        http_get(&self.addr, "/v1/leader").and_then(|b| serde_json::from_str(&b).ok())
    }

    /// Whether it says it leads.
    fn leads(&self) -> bool {
        self.leader().is_some_and(|l| l["leader"] == true)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The body of a 200 answer to `GET path` at `addr`, if any.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let response = raw_get(addr, path)?;
    if !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// The whole answer to `GET path` at `addr` (status line, headers, body).
fn raw_get(addr: &str, path: &str) -> Option<String> {
    crate::support::raw_get(addr, path)
}

/// Polls `done` every 20 ms for up to `within`; how long it took.
#[track_caller]
fn within(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// The index of the one controller of `ctls` that leads, once exactly one
/// does.
fn the_leader(ctls: &[&Ctl]) -> usize {
    let mut found = None;
    within("one leader", Duration::from_secs(10), || {
        let leading: Vec<usize> = (0..ctls.len()).filter(|&i| ctls[i].leads()).collect();
        found = (leading.len() == 1).then(|| leading[0]);
        found.is_some()
    });
    found.unwrap()
}

/// Writes a ModuleDeployment `name` of `version` from `artifact` with
/// `replicas` on group `online`, in 3 batches (1 s apart; fewer if fewer
/// replicas), and applies it
/// through the controllers `list`.
fn apply(work: &Path, list: &str, name: &str, version: &str, artifact: &str, replicas: u32) {
    let spec = format!(
        "replicas: {replicas}\n  baseSelector: {{ group: online }}\n  strategy: {{ batches: {}, pauseBetween: 1s }}",
        replicas.min(3)
    );
    let file = write_deployment(work, name, version, artifact, None, &spec);
    let out = stdout(apply_command(&file, list));
    assert!(out.contains("ModuleDeployment/"), "{out}");
}

/// A base in group `online` that talks to the controllers `list`.
fn base(list: &str, name: &str) -> BaseProcess {
    BaseProcess::joining(list, name, "group=online", "200ms", &[])
}

/// What `/hello` on `base` answers: 1 or 2 (the version), 0 if nothing.
fn hello_version(base: &BaseProcess) -> u8 {
    match http_get(&base.ingress, "/hello") {
        Some(body) if body.contains("version 2") => 2,
        Some(body) if body.contains("Hello from berth!") => 1,
        _ => 0,
    }
}

/// `berth describe deployment NAME -o json` through `list`.
fn describe(list: &str, name: &str) -> serde_json::Value {
    let out = stdout(berth(&[
        "describe",
        "deployment",
        name,
        "-o",
        "json",
        "--controller",
        list,
    ]));
    serde_json::from_str(&out).unwrap()
}

/// How many times events with `reason` and a message containing `text`
/// happened.
fn happened(described: &serde_json::Value, reason: &str, text: &str) -> u64 {
    described["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == reason && e["message"].as_str().unwrap().contains(text))
        .map(|e| e["count"].as_u64().unwrap())
        .sum()
}

/// The events of `described`, one per line.
fn events(described: &serde_json::Value) -> String {
    let lines: Vec<String> = described["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} x{}: {}", e["reason"], e["count"], e["message"]))
        .collect();
    lines.join("\n")
}

#[test]
fn a_new_leader_finishes_a_rollout_whose_leader_was_killed_losing_no_replica() {
    let work = work_dir();
    let etcd = EtcdCluster::start(3);
    let mut ctls: Vec<Ctl> = (0..3)
        .map(|i| Ctl::start(work.path(), &format!("c{i}"), &etcd.store()))
        .collect();
    let leader = the_leader(&ctls.iter().collect::<Vec<_>>());
    // Everyone lists a follower first: writes are forwarded to the leader.
    let follower = (leader + 1) % 3;
    let order = [follower, leader, (leader + 2) % 3];
    let list = order.map(|i| ctls[i].addr.clone()).join(",");
    let leader_url = format!("http://{}", ctls[leader].addr);
    within(
        "the followers know the leader",
        Duration::from_secs(5),
        || {
            order[..1].iter().chain(&order[2..]).all(|&i| {
                ctls[i]
                    .leader()
                    .is_some_and(|l| l["leader"] == false && l["leaderUrl"] == leader_url.as_str())
            })
        },
    );
    let bases: Vec<BaseProcess> = ["a", "b", "c"].iter().map(|n| base(&list, n)).collect();
    // Through the follower alone: it forwards the write to the leader.
    apply(
        work.path(),
        &ctls[follower].addr,
        "hello",
        "1.0.0",
        HELLO,
        3,
    );
    within("3 bases on 1.0.0", Duration::from_secs(20), || {
        bases.iter().all(|b| hello_version(b) == 1)
    });

    // The controllers know it too (a rollout starts from a version that
    // ran everywhere).
    within("3 replicas ready", Duration::from_secs(10), || {
        describe(&list, "hello")["status"]["ready"] == 3
    });
    apply(work.path(), &list, "hello", "2.0.0", HELLO_V2, 3);
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !last.contains("batch 1 done") {
        assert!(
            Instant::now() < deadline,
            "batch 1 never done: {last}\n{}",
            events(&describe(&list, "hello"))
        );
        last = stdout(berth(&[
            "rollout",
            "status",
            "hello",
            "--controller",
            &list,
        ]));
    }
    ctls[leader].kill();
    let killed = Instant::now();
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let survivors: Vec<&Ctl> = ctls
        .iter()
        .filter(|c| c.addr != ctls[leader].addr)
        .collect();
    // No base stops serving while there is no leader.
    let took = within("a new leader", TTL + Duration::from_secs(1), || {
        assert!(
            bases.iter().all(|b| hello_version(b) > 0),
            "a base stopped serving hello during the failover"
        );
        survivors.iter().any(|c| c.leads())
    });
    eprintln!("failover: a new leader {took:?} after the kill");
    within("3 bases on 2.0.0", Duration::from_secs(30), || {
        assert!(bases.iter().all(|b| hello_version(b) > 0));
        bases.iter().all(|b| hello_version(b) == 2)
    });
    within("the rollout complete", Duration::from_secs(10), || {
        stdout(berth(&[
            "rollout",
            "status",
            "hello",
            "--controller",
            &list,
        ]))
        .contains("no rollout in progress")
    });
    eprintln!("rollout finished {:?} after the kill", killed.elapsed());
    let described = describe(&list, "hello");
    // Each batch ran once: none again, none skipped (the last one's end
    // is the rollout's).
    let events = events(&described);
    for (reason, text) in [
        ("BatchComplete", "batch 1 of 3 runs 2.0.0"),
        ("BatchStarted", "batch 2 of 3: 2 of 3 replicas"),
        ("BatchComplete", "batch 2 of 3 runs 2.0.0"),
        ("BatchStarted", "batch 3 of 3: 3 of 3 replicas"),
        ("RolloutComplete", "all 3 replicas run 2.0.0"),
    ] {
        assert_eq!(
            happened(&described, reason, text),
            1,
            "{reason} {text}:\n{events}"
        );
    }
    // The new leader reconciled within TTL + 1 s of the kill: batch 2
    // (due at most 1 s after batch 1, which was done before the kill)
    // started by then.
    let started_ms = described["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["reason"] == "BatchStarted"
                && e["message"].as_str().unwrap().starts_with("batch 2 of 3")
        })
        .and_then(|e| e["firstMs"].as_u64())
        .unwrap();
    let budget = (TTL + Duration::from_secs(1)).as_millis() as u64;
    assert!(
        started_ms <= killed_ms + budget,
        "batch 2 started {} ms after the kill (budget {budget} ms):\n{events}",
        started_ms.saturating_sub(killed_ms)
    );
    // One replica per base, on 2.0.0: none lost, none doubled.
    let replicas = described["status"]["bases"].as_array().unwrap();
    let mut on: Vec<&str> = replicas
        .iter()
        .map(|r| r["base"].as_str().unwrap())
        .collect();
    on.sort();
    assert_eq!(on, ["a", "b", "c"], "{described:#}");
    assert!(
        replicas
            .iter()
            .all(|r| r["version"] == "2.0.0" && r["running"] == true)
    );
}

#[test]
fn a_controller_cut_off_from_etcd_steps_down_within_its_ttl() {
    let work = work_dir();
    let mut etcd = EtcdCluster::start(3);
    let cut = Ctl::start(work.path(), "cut", &format!("etcd://{}", etcd.endpoint(0)));
    within(
        "the first controller leads",
        Duration::from_secs(10),
        || cut.leads(),
    );
    let other = Ctl::start(
        work.path(),
        "other",
        &format!("etcd://{},{}", etcd.endpoint(1), etcd.endpoint(2)),
    );
    within("the second knows who leads", Duration::from_secs(5), || {
        other
            .leader()
            .is_some_and(|l| l["leaderUrl"] == format!("http://{}", cut.addr))
    });

    etcd.kill(0);
    let stepped_down = within("the cut-off controller steps down", TTL, || {
        // Never two leaders at once.
        let (a, b) = (cut.leads(), other.leads());
        assert!(!(a && b), "two leaders at once");
        !a
    });
    eprintln!("cut off: stepped down {stepped_down:?} after its etcd member died");
    // The survivors' raft may elect a leader first, and etcd renews every
    // lease when its raft leader changes: up to one election timeout more.
    within(
        "the other controller leads",
        TTL + Duration::from_secs(3),
        || {
            let (a, b) = (cut.leads(), other.leads());
            assert!(!a, "the cut-off controller leads again");
            b
        },
    );
    // A write sent to the cut-off controller is refused, saying why.
    let file = work.path().join("x.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: x }}\nspec:\n  module: {{ name: x, version: \"1.0.0\", artifact: \"file:{HELLO}\", digest: \"{}\" }}\n  replicas: 1\n",
            file_digest(HELLO)
        ),
    )
    .unwrap();
    let err = failure(berth(&[
        "apply",
        "-f",
        file.to_str().unwrap(),
        "--controller",
        &cut.addr,
    ]));
    assert!(err.contains("knows no leader right now"), "{err}");
    // Through a list, the write reaches the leader.
    let list = format!("{},{}", cut.addr, other.addr);
    let out = stdout(berth(&[
        "apply",
        "-f",
        file.to_str().unwrap(),
        "--controller",
        &list,
    ]));
    assert!(out.contains("ModuleDeployment/x created"), "{out}");
    assert!(!cut.leads());
}

#[test]
fn the_cli_fails_over_to_the_second_controller_when_the_first_is_dead() {
    let work = work_dir();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let ctl = Ctl::start(
        work.path(),
        "c",
        &format!("redb:{}", work.path().join("c.redb").display()),
    );
    let list = format!("{dead},{}", ctl.addr);
    apply(work.path(), &list, "hello", "1.0.0", HELLO, 1);
    let got = stdout(berth(&["get", "deployments", "--controller", &list]));
    assert!(got.contains("hello"), "{got}");
    // BERTH_CONTROLLER takes the same list.
    let mut cmd = berth(&["get", "deployments"]);
    cmd.env("BERTH_CONTROLLER", &list);
    assert!(stdout(cmd).contains("hello"));
    // None alive: both are named.
    let other_dead = format!("127.0.0.1:{}", ctl.port());
    drop(ctl);
    let err = failure(berth(&[
        "get",
        "deployments",
        "--controller",
        &format!("{dead},{other_dead}"),
    ]));
    assert!(
        err.contains(&format!(
            "no controller answers at http://{dead}, http://{other_dead}"
        )) && err.contains("hint: start one with `berth controller`"),
        "{err}"
    );
    let err = failure(berth(&["get", "deployments", "--controller", "a:1,,b:2"]));
    assert!(err.contains("`` is not a controller address"), "{err}");
}

/// `get deployments -o json` through `list`, without the status (which
/// the bases' heartbeats move): manifests, generations, rollouts, history.
fn desired_state(list: &str) -> serde_json::Value {
    let out = stdout(berth(&[
        "get",
        "deployments",
        "-o",
        "json",
        "--controller",
        list,
    ]));
    let mut all: serde_json::Value = serde_json::from_str(&out).unwrap();
    for d in all.as_array_mut().unwrap() {
        d.as_object_mut().unwrap().remove("status");
    }
    all
}

#[test]
fn restarting_every_controller_and_etcd_member_keeps_the_state_identical() {
    let work = work_dir();
    let mut etcd = EtcdCluster::start(3);
    let mut ctls: Vec<Ctl> = (0..2)
        .map(|i| Ctl::start(work.path(), &format!("c{i}"), &etcd.store()))
        .collect();
    let list = ctls
        .iter()
        .map(|c| c.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let a = base(&list, "a");
    apply(work.path(), &list, "hello", "1.0.0", HELLO, 1);
    apply(work.path(), &list, "other", "1.0.0", HELLO, 1);
    within("a serves hello", Duration::from_secs(20), || {
        hello_version(&a) == 1
    });
    let before = desired_state(&list);
    assert_eq!(before.as_array().unwrap().len(), 2, "{before:#}");

    let ports: Vec<u16> = ctls.iter().map(Ctl::port).collect();
    for c in &mut ctls {
        c.kill();
    }
    etcd.restart_all();
    let ctls: Vec<Ctl> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| Ctl::start_on(work.path(), &format!("c{i}"), &etcd.store(), port))
        .collect();
    the_leader(&ctls.iter().collect::<Vec<_>>());
    assert_eq!(desired_state(&list), before);
    // The base kept serving throughout and is Ready again.
    assert_eq!(hello_version(&a), 1);
    within("base a Ready", Duration::from_secs(10), || {
        stdout(berth(&["get", "bases", "--controller", &list])).contains("Ready")
    });
    within("hello ready again", Duration::from_secs(10), || {
        describe(&list, "hello")["status"]["ready"] == 1
    });
}

/// Every key and value of the redb store at `path`; a base record's lease
/// id (granted anew by each copy) left out.
fn redb_state(path: &Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    use berth_controller::store::Store as _;
    let store = berth_controller::store::RedbStore::open(path).unwrap();
    let (entries, _) = store.list("").unwrap();
    entries
        .into_iter()
        .map(|e| {
            let mut value: serde_json::Value =
                serde_json::from_slice(&e.value).unwrap_or(serde_json::Value::Null);
            if e.key.starts_with("/bases/") {
                value.as_object_mut().unwrap().remove("lease");
            }
            (e.key, value)
        })
        .collect()
}

#[test]
fn store_copy_moves_the_whole_state_from_redb_to_etcd_and_back_identically() {
    let work = work_dir();
    let first = work.path().join("first.redb");
    let back = work.path().join("back.redb");
    {
        let ctl = Ctl::start(work.path(), "c", &format!("redb:{}", first.display()));
        let a = base(&ctl.addr, "a");
        apply(work.path(), &ctl.addr, "hello", "1.0.0", HELLO, 1);
        within("a serves hello", Duration::from_secs(20), || {
            hello_version(&a) == 1
        });
        // Not while a controller holds the file.
        let err = failure(berth(&[
            "store",
            "copy",
            "--from",
            &format!("redb:{}", first.display()),
            "--to",
            &format!("redb:{}", back.display()),
        ]));
        assert!(
            err.contains("cannot open --from redb:") && err.contains("stop the controllers"),
            "{err}"
        );
    }
    std::fs::remove_file(&back).ok();
    let etcd = crate::etcd_server::EtcdServer::start();
    let to_etcd = stdout(berth(&[
        "store",
        "copy",
        "--from",
        &format!("redb:{}", first.display()),
        "--to",
        &format!("etcd://{}", etcd.endpoint),
    ]));
    assert!(
        to_etcd.contains("1 base lease(s) granted anew"),
        "{to_etcd}"
    );
    assert!(to_etcd.contains(" keys\n"), "no progress: {to_etcd}");
    // Into a store that holds something: refused, saying how to go on.
    let err = failure(berth(&[
        "store",
        "copy",
        "--from",
        &format!("redb:{}", first.display()),
        "--to",
        &format!("etcd://{}", etcd.endpoint),
    ]));
    assert!(
        err.contains("the destination already holds") && err.contains("--force"),
        "{err}"
    );
    let to_redb = stdout(berth(&[
        "store",
        "copy",
        "--from",
        &format!("etcd://{}", etcd.endpoint),
        "--to",
        &format!("redb:{}", back.display()),
    ]));
    assert!(to_redb.contains("copied"), "{to_redb}");
    let (was, is) = (redb_state(&first), redb_state(&back));
    assert!(
        was.keys().any(|k| k.starts_with("/deployments/")),
        "{was:?}"
    );
    assert!(is.contains_key("/alive/a"), "{is:?}");
    assert_eq!(was, is);
    // --force replaces what is there.
    let forced = stdout(berth(&[
        "store",
        "copy",
        "--from",
        &format!("etcd://{}", etcd.endpoint),
        "--to",
        &format!("redb:{}", back.display()),
        "--force",
    ]));
    assert!(forced.contains("replaced"), "{forced}");
    assert_eq!(redb_state(&back), was);
    // A controller on the copy has the deployment.
    let ctl = Ctl::start(work.path(), "c2", &format!("redb:{}", back.display()));
    let got = stdout(berth(&["get", "deployments", "--controller", &ctl.addr]));
    assert!(got.contains("hello"), "{got}");
}

#[test]
fn killing_one_etcd_member_keeps_the_fleet_working() {
    let work = work_dir();
    let mut etcd = EtcdCluster::start(3);
    let ctls: Vec<Ctl> = (0..2)
        .map(|i| Ctl::start(work.path(), &format!("c{i}"), &etcd.store()))
        .collect();
    let list = ctls
        .iter()
        .map(|c| c.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let a = base(&list, "a");
    apply(work.path(), &list, "hello", "1.0.0", HELLO, 1);
    within("a serves hello", Duration::from_secs(20), || {
        hello_version(&a) == 1
    });

    etcd.kill(0);
    // Writes, placement, the base's watch and heartbeats all go on.
    apply(work.path(), &list, "hello", "2.0.0", HELLO_V2, 1);
    within("a serves hello 2.0.0", Duration::from_secs(20), || {
        let version = hello_version(&a);
        assert!(
            version > 0,
            "a stopped serving hello: {:?}; it runs {:?}",
            raw_get(&a.ingress, "/hello"),
            http_get(&a.ops, "/v1/modules")
        );
        version == 2
    });
    within("the rollout complete", Duration::from_secs(10), || {
        stdout(berth(&[
            "rollout",
            "status",
            "hello",
            "--controller",
            &list,
        ]))
        .contains("no rollout in progress")
    });
    let bases = stdout(berth(&["get", "bases", "--controller", &list]));
    assert!(bases.contains("Ready"), "{bases}");
    the_leader(&ctls.iter().collect::<Vec<_>>());
}

#[test]
fn a_leader_that_is_stopped_hands_over_at_once_and_a_bad_ttl_is_refused() {
    let work = work_dir();
    let etcd = crate::etcd_server::EtcdServer::start();
    let store = format!("etcd://{}", etcd.endpoint);
    let first = Ctl::start(work.path(), "c0", &store);
    within("the first leads", Duration::from_secs(10), || first.leads());
    let second = Ctl::start(work.path(), "c1", &store);
    within("the second follows", Duration::from_secs(5), || {
        second
            .leader()
            .is_some_and(|l| l["leader"] == false && l["leaderUrl"].is_string())
    });
    // Ctrl-C: the leader gives its lease up on the way out.
    let interrupted = Command::new("kill")
        .args(["-INT", &first.child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    // Well before the lease could have expired.
    let took = within("the second leads", TTL / 2, || second.leads());
    eprintln!("handover after SIGINT: {took:?}");
    // Too short a lease to renew is refused at start, saying what works.
    let mut cmd = controller_command(&["--store", &store]);
    cmd.args(["--leader-ttl", "500ms", "--data-dir"])
        .arg(work.path().join("c2"));
    let err = failure(cmd);
    assert!(
        err.contains("--leader-ttl 500ms: a leader lease lasts at least 1s"),
        "{err}"
    );
}
