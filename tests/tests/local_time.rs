//! A wait until a time of day in each recipient's own zone: the population
//! goes on in groups as each zone reaches the hour (a subscription by its
//! recipient's zone; a recipient without one by the fallback), on the
//! virtual clock, across New York's change to summer time. Checked at the
//! loopback servers after each move of the clock, and by the instant the
//! delivery log gives each message.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::Env;
use common::rig::{log_entries, servers, setup};
use common::served::{Served, wait_for};

/// 20:00Z on Saturday 2026-03-07: New York moves to summer time at 02:00
/// local the next night, so its 09:00 on Sunday is 13:00Z, not 14:00Z.
const START: &str = "2026-03-07T20:00:00Z";

const RECIPIENTS: &str = "id,email,mobile,first_name,last_name,locale,timezone,loyalty
Z1,z1@zones.example,,Aiko,Sato,ja-JP,Asia/Tokyo,
Z2,z2@zones.example,,Ren,Ito,ja-JP,Asia/Tokyo,
Z3,z3@zones.example,,Léa,Roux,fr-FR,Europe/Paris,
Z4,z4@zones.example,,Amy,Lee,en-US,America/New_York,
Z5,z5@zones.example,,Bob,Kim,en-US,America/New_York,
Z6,z6@zones.example,,Sam,Doe,,,
";

/// Recipient of each device (two for Z1).
const DEVICES: &[(&str, &str)] = &[("ZS1", "Z1"), ("ZS2", "Z1"), ("ZS3", "Z4"), ("ZS4", "Z6")];

fn token(sub: &str) -> String {
    format!(
        "{:0>64}",
        sub.bytes().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn workflow(name: &str, dimension: &str, filter: &str, delivery: &str) -> String {
    format!(
        r#"name = "{name}"

[activity.query]
type = "query"
next = {{ done = "morning" }}
config = {{ dimension = "{dimension}", filter = "{filter}" }}

[activity.morning]
type = "wait"
next = {{ done = ["send", "all"] }}
config = {{ until = "09:00", timezone = "recipient", fallback = "Asia/Kolkata" }}

[activity.send]
{delivery}

[activity.all]
type = "union"
"#
    )
}

/// Instants (ms) from RFC 3339.
fn ms(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp_millis()
}

#[test]
fn each_zone_gets_its_messages_at_its_own_nine_oclock() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let people = env.data().join("zones.csv");
    std::fs::write(&people, RECIPIENTS).unwrap();
    env.ok(&["import", "recipients", people.to_str().unwrap()]);
    let mut subs = String::from("id,recipient_id,app,platform,token\n");
    for (sub, owner) in DEVICES {
        subs.push_str(&format!(
            "{sub},{owner},com.acme.zones,android,{}\n",
            token(sub)
        ));
    }
    let devices = env.data().join("zone-devices.csv");
    std::fs::write(&devices, subs).unwrap();
    env.ok(&["import", "subscriptions", devices.to_str().unwrap()]);

    let mail = env.data().join("mail.toml");
    std::fs::write(
        &mail,
        workflow(
            "morning-mail",
            "recipient",
            "email like '%@zones.example'",
            "type = \"email\"\nconfig = { account = \"smtp\", from = \"news@acme.example\", subject = \"Morning {{ first_name }}\", text = \"Hello\" }",
        ),
    )
    .unwrap();
    let push = env.data().join("push.toml");
    std::fs::write(
        &push,
        workflow(
            "morning-push",
            "subscription",
            "app = 'com.acme.zones'",
            "type = \"fcm\"\nconfig = { account = \"fcm\", title = \"Morning\", body = \"Hello\" }",
        ),
    )
    .unwrap();
    let _served = Served::start(&env, &["--now", START]);
    env.ok(&["run", mail.to_str().unwrap()]);
    env.ok(&["run", push.to_str().unwrap()]);

    // What the servers received, as recipient ids (emails) and device ids.
    let emailed = || -> BTreeSet<String> {
        s.rig
            .smtp
            .received()
            .iter()
            .filter_map(|m| {
                m.to[0]
                    .strip_suffix("@zones.example")
                    .map(str::to_uppercase)
            })
            .collect()
    };
    let pushed = || -> BTreeSet<String> {
        let sent: BTreeSet<String> = s.rig.fcm.received().into_iter().map(|p| p.token).collect();
        DEVICES
            .iter()
            .filter(|(sub, _)| sent.contains(&token(sub)))
            .map(|(sub, _)| sub.to_string())
            .collect()
    };
    let settled = || {
        wait_for("both runs to settle", Duration::from_secs(60), || {
            [1, 2].iter().all(|r| {
                let st = env.status(*r)["state"].clone();
                st == "waiting" || st == "done"
            })
        });
    };
    let set = |ids: &[&str]| -> BTreeSet<String> { ids.iter().map(|s| s.to_string()).collect() };
    settled();
    let st = env.status(1);
    assert_eq!(
        st["activities"]["morning"]["waiting_until"], "2026-03-08T00:00:00Z",
        "Tokyo first: {st:#}"
    );

    // (move, recipients emailed, devices pushed) after it.
    let steps: &[(&str, &[&str], &[&str])] = &[
        ("3h 59m", &[], &[]),
        // 09:00 in Tokyo: 00:00Z.
        ("1m", &["Z1", "Z2"], &["ZS1", "ZS2"]),
        ("3h 29m", &["Z1", "Z2"], &["ZS1", "ZS2"]),
        // No zone: the fallback, Kolkata's 09:00 (03:30Z).
        ("1m", &["Z1", "Z2", "Z6"], &["ZS1", "ZS2", "ZS4"]),
        ("4h 29m", &["Z1", "Z2", "Z6"], &["ZS1", "ZS2", "ZS4"]),
        // Paris, still on winter time: 08:00Z.
        ("1m", &["Z1", "Z2", "Z3", "Z6"], &["ZS1", "ZS2", "ZS4"]),
        // New York on summer time since 07:00Z: 09:00 EDT is 13:00Z.
        ("4h 59m", &["Z1", "Z2", "Z3", "Z6"], &["ZS1", "ZS2", "ZS4"]),
        (
            "1m",
            &["Z1", "Z2", "Z3", "Z4", "Z5", "Z6"],
            &["ZS1", "ZS2", "ZS3", "ZS4"],
        ),
    ];
    let mut moved = Vec::new();
    for (by, mails, pushes) in steps {
        let said = env.ok(&["clock", "advance", by]);
        moved.push(said.clone());
        settled();
        assert_eq!(emailed(), set(mails), "after {moved:#?}");
        assert_eq!(pushed(), set(pushes), "after {moved:#?}");
    }
    // Each message once.
    assert_eq!(s.rig.smtp.received().len(), 6);
    assert_eq!(s.rig.fcm.received_count(), 4);

    for run in [1, 2] {
        let st = env.status(run);
        assert_eq!(st["state"], "done", "{st:#}");
        let n = if run == 1 { 6 } else { 4 };
        assert_eq!(
            st["activities"]["morning"]["transitions"]["done"], n,
            "{st:#}"
        );
        // A join gets every group at once, when the last has left.
        assert_eq!(st["activities"]["all"]["transitions"]["done"], n, "{st:#}");
    }
    let members = env.ok(&["members", "1", "all", "done"]);
    let mut members: Vec<&str> = members.lines().collect();
    members.sort();
    assert_eq!(members, ["Z1", "Z2", "Z3", "Z4", "Z5", "Z6"]);
    // The instant each message left, on the run's clock.
    let due: BTreeMap<&str, i64> = [
        ("Z1", "2026-03-08T00:00:00Z"),
        ("Z2", "2026-03-08T00:00:00Z"),
        ("Z6", "2026-03-08T03:30:00Z"),
        ("Z3", "2026-03-08T08:00:00Z"),
        ("Z4", "2026-03-08T13:00:00Z"),
        ("Z5", "2026-03-08T13:00:00Z"),
    ]
    .into_iter()
    .map(|(r, at)| (r, ms(at)))
    .collect();
    let mails = log_entries(&env, 1, "send");
    assert_eq!(mails.len(), 6);
    for e in &mails {
        let id = e["id"].as_str().unwrap();
        assert_eq!(e["at"], due[id], "{e}");
    }
    let pushes = log_entries(&env, 2, "send");
    assert_eq!(pushes.len(), 4);
    for e in &pushes {
        let sub = e["id"].as_str().unwrap();
        let owner = DEVICES.iter().find(|(s, _)| *s == sub).unwrap().1;
        assert_eq!(e["at"], due[owner], "{e}");
    }
}
