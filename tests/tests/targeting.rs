//! Targeting: Query and Split in full, on a generated audience whose
//! expected selections the test computes itself from the rows it wrote.

mod common;

use std::collections::BTreeSet;

use common::{Env, count};

/// The run's clock.
const NOW: &str = "2026-11-29T12:00:00Z";

/// One generated recipient.
#[derive(Debug, Clone)]
struct Person {
    id: String,
    n: u64,
    email: bool,
    score: u64,
    tier: &'static str,
    /// Days before NOW it was created.
    age_days: i64,
}

fn people() -> Vec<Person> {
    (1..=200u64)
        .map(|n| Person {
            id: format!("P{n}"),
            n,
            email: n % 3 != 0,
            score: (n * 37) % 101,
            tier: match n % 5 {
                0 => "gold",
                1 | 2 => "silver",
                _ => "bronze",
            },
            age_days: (n as i64 * 7) % 90,
        })
        .collect()
}

/// An environment with the plugins installed and the people imported.
fn setup() -> (Env, Vec<Person>) {
    let env = Env::new();
    env.ok(&["init"]);
    let people = people();
    let now = chrono::DateTime::parse_from_rfc3339(NOW).unwrap();
    let mut csv =
        String::from("id,email,mobile,first_name,last_name,locale,timezone,score,tier,created\n");
    for p in &people {
        let created = (now - chrono::Duration::days(p.age_days)).format("%Y-%m-%dT%H:%M:%SZ");
        csv.push_str(&format!(
            "{},{},,F{},L{},en-US,America/New_York,{},{},{}\n",
            p.id,
            if p.email {
                format!("{}@example.com", p.id.to_lowercase())
            } else {
                String::new()
            },
            p.n,
            p.n,
            p.score,
            p.tier,
            created
        ));
    }
    let file = env.data().join("people.csv");
    std::fs::write(&file, csv).unwrap();
    env.ok(&["import", "recipients", file.to_str().unwrap()]);
    let mut subs = String::from("id,recipient_id,app,platform,token\n");
    for p in &people {
        for k in 0..devices(p) {
            let platform = if k % 2 == 0 { "ios" } else { "android" };
            subs.push_str(&format!(
                "S{}_{k},{},com.acme.shop,{platform},t{}x{k}\n",
                p.n, p.id, p.n
            ));
        }
    }
    let file = env.data().join("subs.csv");
    std::fs::write(&file, subs).unwrap();
    env.ok(&["import", "subscriptions", file.to_str().unwrap()]);
    (env, people)
}

/// How many app subscriptions a generated person has: 0 to 3.
fn devices(p: &Person) -> u64 {
    p.n % 4
}

fn run(env: &Env, name: &str, toml: &str) -> (u64, serde_json::Value) {
    let wf = env.data().join(format!("{name}.toml"));
    std::fs::write(&wf, toml).unwrap();
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&["--now", NOW, "run", wf.to_str().unwrap(), "--json"]))
            .unwrap();
    assert_eq!(status["state"], "done", "{status:#}");
    (status["run"].as_u64().unwrap(), status)
}

fn members(env: &Env, run: u64, activity: &str, transition: &str) -> BTreeSet<String> {
    env.ok(&["members", &run.to_string(), activity, transition])
        .lines()
        .map(str::to_string)
        .collect()
}

fn ids<'a>(people: impl IntoIterator<Item = &'a Person>) -> BTreeSet<String> {
    people.into_iter().map(|p| p.id.clone()).collect()
}

/// Ordered subsets, first match wins; limits by rank, by seeded random
/// sample (a percentage) and by count; what a limit leaves out goes on to
/// later subsets; skip-empty; the complement.
#[test]
fn split_orders_limits_skips_and_complements() {
    let (env, people) = setup();
    let wf = r#"
name = "split"
[activity.q]
type = "query"
config = { dimension = "recipient", filter = "email is not empty" }
next = { done = "split" }

[activity.split]
type = "split"
next = { best_gold = "w1", some_silver = "w2", recent = "w3", platinum = "w4", rest = "w5" }

[activity.split.config]
complement = "rest"
subsets = [
  { name = "best_gold", filter = "tier = 'gold'", limit = { size = 5, select = "rank", by = "score", descending = true } },
  { name = "some_silver", filter = "tier in ('gold', 'silver')", limit = { size = "50%", select = "random", seed = 7 } },
  { name = "recent", filter = "created > now() - 30d", limit = { size = 10 } },
  { name = "platinum", filter = "tier = 'platinum'", skip_empty = true },
]

[activity.w1]
type = "wait"
config = { duration = "0s" }
[activity.w2]
type = "wait"
config = { duration = "0s" }
[activity.w3]
type = "wait"
config = { duration = "0s" }
[activity.w4]
type = "wait"
config = { duration = "0s" }
[activity.w5]
type = "wait"
config = { duration = "0s" }
"#;
    let (run_id, status) = run(&env, "split", wf);
    let emailed: Vec<&Person> = people.iter().filter(|p| p.email).collect();

    // best_gold: the five highest scores among gold recipients with an email.
    let mut gold: Vec<&Person> = emailed
        .iter()
        .copied()
        .filter(|p| p.tier == "gold")
        .collect();
    gold.sort_by_key(|p| (std::cmp::Reverse(p.score), p.n));
    let best_gold = ids(gold.iter().take(5).copied());
    assert_eq!(members(&env, run_id, "split", "best_gold"), best_gold);

    // some_silver: half (rounded) of gold-or-silver not already taken, at random.
    let eligible: BTreeSet<String> = ids(emailed
        .iter()
        .copied()
        .filter(|p| (p.tier == "gold" || p.tier == "silver") && !best_gold.contains(&p.id)));
    let some_silver = members(&env, run_id, "split", "some_silver");
    assert_eq!(
        some_silver.len(),
        (eligible.len() as f64 * 0.5).round() as usize
    );
    assert!(some_silver.is_subset(&eligible));

    // recent: the ten lowest ids created within 30 days among what is left;
    // the gold and silver records the sample left out are still candidates.
    let taken: BTreeSet<String> = best_gold.union(&some_silver).cloned().collect();
    let recent_all: Vec<&Person> = emailed
        .iter()
        .copied()
        .filter(|p| p.age_days < 30 && !taken.contains(&p.id))
        .collect();
    let recent = ids(recent_all.iter().take(10).copied());
    assert_eq!(members(&env, run_id, "split", "recent"), recent);
    assert!(
        recent.iter().any(|id| eligible.contains(id)),
        "a record left out by a limit goes on to later subsets"
    );

    // platinum matched nothing and is skipped: nothing downstream ran.
    assert_eq!(
        status["activities"]["split"]["skipped"],
        serde_json::json!(["platinum"])
    );
    assert_eq!(status["activities"]["w4"]["state"], "not_reached");
    assert_eq!(status["activities"]["w5"]["state"], "done");

    // The complement: every emailed record no subset took.
    let all_taken: BTreeSet<String> = taken.union(&recent).cloned().collect();
    let rest = ids(emailed
        .iter()
        .copied()
        .filter(|p| !all_taken.contains(&p.id)));
    assert_eq!(members(&env, run_id, "split", "rest"), rest);
    assert_eq!(count(&status, "split", "rest"), rest.len() as u64);
    assert_eq!(count(&status, "q", "done"), emailed.len() as u64);

    // The same seed picks the same sample; another seed, another sample.
    let (again, _) = run(&env, "split-again", wf);
    assert_eq!(members(&env, again, "split", "some_silver"), some_silver);
    let (other, _) = run(&env, "split-seed", &wf.replace("seed = 7", "seed = 8"));
    let other = members(&env, other, "split", "some_silver");
    assert_eq!(other.len(), some_silver.len());
    assert_ne!(other, some_silver);
}

/// With overlap, every subset sees the whole population; an empty subset
/// that does not skip still takes its transition.
#[test]
fn split_with_overlap_and_query_limits() {
    let (env, people) = setup();
    let wf = r#"
name = "overlap"
[activity.q]
type = "query"
config = { dimension = "recipient", filter = "score >= 50", limit = { size = 40, select = "rank", by = "created", descending = true } }
next = { done = "split" }

[activity.split]
type = "split"
next = { gold = "w1", emailed = "w2", none = "w3" }

[activity.split.config]
overlap = true
complement = "neither"
subsets = [
  { name = "gold", filter = "tier = 'gold'" },
  { name = "emailed", filter = "email like '%@example.com'" },
  { name = "none", filter = "score < 0" },
]

[activity.w1]
type = "wait"
config = { duration = "0s" }
[activity.w2]
type = "wait"
config = { duration = "0s" }
[activity.w3]
type = "wait"
config = { duration = "0s" }
"#;
    let (run_id, status) = run(&env, "overlap", wf);
    // The query: the 40 most recently created with a score of at least 50.
    let mut candidates: Vec<&Person> = people.iter().filter(|p| p.score >= 50).collect();
    candidates.sort_by_key(|p| (p.age_days, p.n));
    let queried = ids(candidates.iter().take(40).copied());
    assert_eq!(members(&env, run_id, "q", "done"), queried);

    let chosen: Vec<&Person> = people.iter().filter(|p| queried.contains(&p.id)).collect();
    let gold = ids(chosen.iter().copied().filter(|p| p.tier == "gold"));
    let emailed = ids(chosen.iter().copied().filter(|p| p.email));
    assert!(
        !gold.is_disjoint(&emailed),
        "the data overlaps, so the test means something"
    );
    assert_eq!(members(&env, run_id, "split", "gold"), gold);
    assert_eq!(members(&env, run_id, "split", "emailed"), emailed);
    let neither = ids(chosen
        .iter()
        .copied()
        .filter(|p| p.tier != "gold" && !p.email));
    assert_eq!(members(&env, run_id, "split", "neither"), neither);
    // `none` is empty but not skipped: its transition is taken with no one.
    assert_eq!(count(&status, "split", "none"), 0);
    assert_eq!(status["activities"]["w3"]["state"], "done");
    assert!(status["activities"]["split"]["skipped"].is_null());
}

/// Union, intersection and exclusion join their inputs; deduplication keeps
/// the first record per value; change dimension moves between recipients and
/// their app subscriptions; a join fed by a skipped transition still runs.
#[test]
fn set_activities_combine_populations() {
    let (env, people) = setup();
    let wf = r#"
name = "sets"
[activity.gold]
type = "query"
config = { dimension = "recipient", filter = "tier = 'gold'" }
next = { done = ["union", "intersection", "exclusion", "split", "to_subs"] }

[activity.emailed]
type = "query"
config = { dimension = "recipient", filter = "email is not empty" }
next = { done = ["union", "intersection", "exclusion", "union_skipped"] }

[activity.union]
type = "union"

[activity.intersection]
type = "intersection"

[activity.exclusion]
type = "exclusion"
config = { keep = "emailed.done" }

[activity.split]
type = "split"
config = { subsets = [{ name = "none", filter = "tier = 'platinum'", skip_empty = true }], complement = "rest" }
next = { none = "union_skipped" }

[activity.union_skipped]
type = "union"

[activity.everyone]
type = "query"
config = { dimension = "recipient" }
next = { done = "dedup" }

[activity.dedup]
type = "dedup"
config = { by = "tier", duplicates = "dupes" }

[activity.to_subs]
type = "change-dimension"
config = { to = "subscription" }
next = { done = "to_recipients" }

[activity.to_recipients]
type = "change-dimension"
config = { to = "recipient" }
"#;
    let (run_id, status) = run(&env, "sets", wf);
    let gold = ids(people.iter().filter(|p| p.tier == "gold"));
    let emailed = ids(people.iter().filter(|p| p.email));
    let m = |a: &str, t: &str| members(&env, run_id, a, t);
    assert_eq!(m("union", "done"), gold.union(&emailed).cloned().collect());
    assert_eq!(
        m("intersection", "done"),
        gold.intersection(&emailed).cloned().collect()
    );
    assert_eq!(
        m("exclusion", "done"),
        emailed.difference(&gold).cloned().collect()
    );
    // Each join ran once, with both inputs.
    for join in ["union", "intersection", "exclusion", "union_skipped"] {
        assert_eq!(
            status["activities"][join]["state"], "done",
            "{join}: {status:#}"
        );
    }
    assert_eq!(
        status["activities"]["split"]["skipped"],
        serde_json::json!(["none"])
    );
    assert_eq!(m("union_skipped", "done"), emailed);

    // The first record of each tier, in import order: P1 silver, P3 bronze, P5 gold.
    let kept = m("dedup", "done");
    assert_eq!(
        kept,
        ["P1", "P3", "P5"].iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(m("dedup", "dupes").len(), people.len() - 3);

    let gold_subs: BTreeSet<String> = people
        .iter()
        .filter(|p| p.tier == "gold")
        .flat_map(|p| (0..devices(p)).map(move |k| format!("S{}_{k}", p.n)))
        .collect();
    assert!(!gold_subs.is_empty());
    assert_eq!(m("to_subs", "done"), gold_subs);
    let gold_with_devices = ids(people.iter().filter(|p| p.tier == "gold" && devices(p) > 0));
    assert!(
        gold_with_devices.len() < gold.len(),
        "someone gold has no device"
    );
    assert_eq!(m("to_recipients", "done"), gold_with_devices);
}
