//! The web UI of `crosscast serve` in a real browser: headless Chromium
//! driven through chromedriver (WebDriver). The counts the page shows are
//! compared with what the loopback servers received, never with the code
//! that renders them.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::rig::{servers, setup};
use common::served::Served;
use common::{Env, free_port, read_recipients, read_subscriptions, root, target_dir};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const T0: &str = "2026-01-05T09:00:00Z";

/// chromedriver on a loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver and a headless Chromium session in a window of
/// 1280×800.
async fn browser() -> (Driver, Client) {
    for tool in ["/usr/bin/chromedriver", "/usr/bin/chromium"] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
        );
    }
    let port = free_port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: profile,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Chromium's own connections (updates, sync, QUIC) are off: the
    // machine's network is closed and the test needs none of them.
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,800", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic",
                "--no-first-run", "--hide-scrollbars=false",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ],
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");
    // The window's frame aside, the page gets 1280×800.
    let frame = client
        .execute(
            "return [outerWidth - innerWidth, outerHeight - innerHeight]",
            vec![],
        )
        .await
        .unwrap();
    let extra = |i: usize| frame[i].as_u64().unwrap() as u32;
    client
        .set_window_size(1280 + extra(0), 800 + extra(1))
        .await
        .unwrap();
    let inner = client
        .execute("return [innerWidth, innerHeight]", vec![])
        .await
        .unwrap();
    assert_eq!(inner, json!([1280, 800]));
    (driver, client)
}

/// Waits until `ok` holds, asking again every 200 ms.
async fn until<F, Fut>(what: &str, within: Duration, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `script` in the page and returns its value.
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.expect("script runs")
}

/// What the page's graph shows: each transition's label by (from,
/// transition), and each activity's full text and its visible state line.
async fn graph_texts(c: &Client) -> (BTreeMap<(String, String), String>, BTreeMap<String, Value>) {
    let v = js(
        c,
        "const edges = [...document.querySelectorAll('#graph g.edge-label')].map(g => \
           [g.dataset.from, g.dataset.transition, g.querySelector('text').textContent]);
         const nodes = [...document.querySelectorAll('#graph g.node')].map(g => [g.dataset.activity, {
           title: g.querySelector('title').textContent,
           state: g.querySelector('.node-state').textContent,
           detail: g.querySelector('.node-detail').textContent }]);
         return { edges, nodes };",
    )
    .await;
    let edges = v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |i: usize| e[i].as_str().unwrap().to_string();
            ((s(0), s(1)), s(2))
        })
        .collect();
    let nodes = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n[0].as_str().unwrap().to_string(), n[1].clone()))
        .collect();
    (edges, nodes)
}

/// The text of the element `css` selects.
async fn text(c: &Client, css: &str) -> String {
    let e = c.find(Locator::Css(css)).await;
    e.unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// The text of the element `css` selects, empty while there is none.
async fn text_now(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Clicks the element `css` selects.
async fn click(c: &Client, css: &str) {
    let e = c.find(Locator::Css(css)).await;
    e.unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Types `token` in the sign-in form and sends it.
async fn sign_in(c: &Client, token: &str) {
    let input = c.wait().for_element(Locator::Id("token")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(token).await.unwrap();
    click(c, "#sign-in-button").await;
}

/// A runtime for the WebDriver client.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Saves what the browser shows as `target/ui/NAME.png`.
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"));
    let dir = target_dir().join("ui");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The number after `word ` in `text` (`sent 118, failed 2` → 118).
fn number_after(text: &str, word: &str) -> Option<usize> {
    let at = text.find(&format!("{word} "))? + word.len() + 1;
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Signs in, watches the reference workflow's run wait and then, once the
/// virtual clock moves, finish, without a reload; the counts shown are the
/// servers'. A wrong token is refused; the session cookie is HttpOnly and
/// SameSite=Strict, and a change made with it must come from the page.
#[test]
fn the_web_ui_shows_a_run_moving_with_the_servers_counts() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let served = Served::start(&env, &["--now", T0]);
    let token = env.ok(&["token", "create", "ui"]).trim().to_string();
    // One recipient the workflow emails is on the denylist: its exclusion
    // shows with its reason.
    let recipients = read_recipients(&root().join("tests/data/recipients.csv"));
    let denied = read_subscriptions(&root().join("tests/data/subscriptions.csv"))
        .iter()
        .filter(|s| s.app == "com.acme.shop")
        .find_map(|s| recipients[&s.recipient].email.clone())
        .expect("an app user with an email");
    env.ok(&["denylist", "add", "email", &denied]);
    runtime().block_on(async {
        let (_driver, c) = browser().await;
        c.goto(&format!("{}/", served.api)).await.unwrap();

        // A wrong token is refused, and no session is given.
        sign_in(&c, "cct_not-a-token").await;
        until("the refusal", Duration::from_secs(10), || async {
            text_now(&c, "#sign-in-error").await.contains("unknown or revoked")
        })
        .await;
        assert!(c.get_all_cookies().await.unwrap().is_empty());
        for hidden in ["#nav", "#sign-out"] {
            let shown = c.find(Locator::Css(hidden)).await.unwrap();
            assert!(!shown.is_displayed().await.unwrap(), "{hidden} before sign-in");
        }
        screenshot(&c, "sign-in").await;

        // The right one signs in; the cookie is out of scripts' reach.
        sign_in(&c, &token).await;
        c.wait().for_element(Locator::Id("runs")).await.unwrap();
        let cookies = c.get_all_cookies().await.unwrap();
        let session = cookies
            .iter()
            .find(|k| k.name() == "crosscast_session")
            .expect("a session cookie");
        assert_eq!(session.http_only(), Some(true));
        assert_eq!(
            session.same_site().map(|s| s.to_string()).as_deref(),
            Some("Strict")
        );
        let cookie = format!("crosscast_session={}", session.value());
        assert!(
            !js(&c, "return document.cookie")
                .await
                .as_str()
                .unwrap()
                .contains("crosscast_session"),
            "scripts cannot read the session"
        );

        // The reference workflow, started with the CLI beside the server:
        // it sends, then waits a week.
        let wf = root().join("examples/cross-channel.toml");
        let out = env.run(&["run", wf.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0));
        let (emails, sms) = (s.rig.smtp.received().len(), s.rig.sms.received().len());
        assert!(emails > 0 && sms > 0);

        // The runs list names it; its page shows the graph while it waits.
        until("run 1 listed", Duration::from_secs(10), || async {
            c.find(Locator::Css("#runs tr[data-run='1']")).await.is_ok()
        })
        .await;
        click(&c, "#runs tr[data-run='1'] a").await;
        until("the graph", Duration::from_secs(10), || async {
            let (_, nodes) = graph_texts(&c).await;
            nodes
                .get("wait")
                .is_some_and(|n| n["state"].as_str().unwrap().contains("until 2026-01-12"))
        })
        .await;
        let (edges, nodes) = graph_texts(&c).await;
        assert_eq!(nodes.len(), 8, "{nodes:?}");
        let sent = |n: &Value| number_after(n["title"].as_str().unwrap(), "sent");
        assert_eq!(sent(&nodes["deliver_email"]), Some(emails), "{nodes:?}");
        assert_eq!(sent(&nodes["deliver_sms"]), Some(sms), "{nodes:?}");
        assert!(
            nodes["deliver_email"]["state"]
                .as_str()
                .unwrap()
                .contains("done"),
            "a state in words: {nodes:?}"
        );
        assert_eq!(nodes["push_ios"]["state"], "· not reached");
        let ios = ("split_os".to_string(), "ios".to_string());
        assert_eq!(edges[&ios], "ios", "no count before split_os ran");
        let query = &edges[&("query".to_string(), "done".to_string())];
        let chosen = number_after(query, "done").unwrap();
        assert_eq!(
            number_after(&edges[&("split_channel".into(), "email".into())], "email").unwrap()
                + number_after(&edges[&("split_channel".into(), "sms".into())], "sms").unwrap(),
            chosen,
            "every chosen subscription took one channel: {edges:?}"
        );

        // Readable at 1280×800: every activity in sight, its text at least
        // 10 px high.
        let seen = js(
            &c,
            "const box = document.getElementById('graph').getBoundingClientRect();
             return [...document.querySelectorAll('#graph g.node')].map(g => {
               const r = g.getBoundingClientRect();
               const t = g.querySelector('.node-type').getBoundingClientRect();
               return [g.dataset.activity, r.left >= box.left - 1 && r.right <= box.right + 1
                 && r.top >= box.top - 1 && r.bottom <= Math.min(box.bottom, innerHeight) + 1, t.height];
             });",
        )
        .await;
        for n in seen.as_array().unwrap() {
            assert_eq!(n[1], true, "{} in sight at 1280×800: {seen}", n[0]);
            assert!(n[2].as_f64().unwrap() >= 10.0, "{} readable: {seen}", n[0]);
        }

        // The clock moves: the page follows without a reload.
        js(&c, "window.__same_page = 42; return null").await;
        let moved = env.ok(&["clock", "advance", "7d"]);
        assert!(moved.contains("2 timer(s) fired"), "{moved}");
        until("the pushes on the page", Duration::from_secs(60), || async {
            let (_, nodes) = graph_texts(&c).await;
            ["push_ios", "push_android"]
                .iter()
                .all(|a| nodes[*a]["state"].as_str().unwrap().contains("done"))
        })
        .await;
        until("the run done", Duration::from_secs(30), || async {
            text_now(&c, "#run-title").await.contains("done")
        })
        .await;
        assert_eq!(
            js(&c, "return window.__same_page").await,
            42,
            "the page was not reloaded"
        );
        let (edges, nodes) = graph_texts(&c).await;
        let (apns, fcm) = (s.rig.apns.received().len(), s.rig.fcm.received().len());
        assert!(apns > 0 && fcm > 0);
        assert_eq!(sent(&nodes["push_ios"]), Some(apns), "{nodes:?}");
        assert_eq!(sent(&nodes["push_android"]), Some(fcm), "{nodes:?}");
        assert_eq!(edges[&ios], format!("ios {apns}"));
        assert_eq!(
            edges[&("split_os".into(), "android".into())],
            format!("android {fcm}")
        );
        screenshot(&c, "run").await;

        // An activity's details: its messages, a sample as it would leave.
        click(&c, "#graph g.node[data-activity='deliver_email']").await;
        c.wait().for_element(Locator::Id("sample")).await.unwrap();
        let shown = text(&c, "#details td[data-count='sent']").await;
        assert_eq!(shown, emails.to_string());
        let sample = text(&c, "#sample").await;
        assert!(sample.contains("new arrivals are in"), "{sample}");
        assert!(sample.contains("news@acme.example"), "{sample}");
        let emailed: std::collections::BTreeSet<String> = s
            .rig
            .smtp
            .received()
            .iter()
            .flat_map(|m| m.to.clone())
            .collect();
        assert!(!emailed.contains(&denied), "{denied} was not emailed");
        assert_eq!(text(&c, "#details td[data-count='excluded']").await, "1");
        let reasons = text(&c, "#details table.reasons").await;
        assert!(
            reasons.contains("on the email denylist since") && reasons.ends_with(" 1"),
            "{reasons}"
        );
        screenshot(&c, "details").await;
        // The HTML part, drawn in a frame that runs no script.
        let frame = c
            .find(Locator::Css("#sample iframe.message-html"))
            .await
            .unwrap();
        assert_eq!(frame.attr("sandbox").await.unwrap().as_deref(), Some(""));
        frame.enter_frame().await.unwrap();
        let html = text(&c, "body").await;
        assert!(html.contains("Our new collection just landed"), "{html}");
        c.enter_parent_frame().await.unwrap();

        // The delivery log, filtered: one row per device APNs received.
        c.goto(&format!(
            "{}/#/runs/1/deliveries?activity=push_ios&state=sent&limit=2000",
            served.api
        ))
        .await
        .unwrap();
        until("the filtered log", Duration::from_secs(10), || async {
            let rows = c.find_all(Locator::Css("#log tbody tr")).await.unwrap();
            rows.len() == apns
        })
        .await;
        let devices: std::collections::BTreeSet<String> = s
            .rig
            .apns
            .received()
            .iter()
            .map(|p| p.token.clone())
            .collect();
        let shown: std::collections::BTreeSet<String> = js(
            &c,
            "return [...document.querySelectorAll('#log tbody tr')].map(r => r.children[2].textContent)",
        )
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
        assert_eq!(shown, devices, "the log's addresses are APNs' devices");
        screenshot(&c, "log").await;

        // The suppression lists.
        c.goto(&format!("{}/#/suppression", served.api))
            .await
            .unwrap();
        until("the denylist", Duration::from_secs(10), || async {
            text_now(&c, "#suppression").await.contains(&denied)
        })
        .await;
        screenshot(&c, "suppression").await;

        // The schedules, with when each next starts a run.
        let weekly = env.data().join("weekly.toml");
        let text_of_wf = std::fs::read_to_string(&wf).unwrap();
        std::fs::write(
            &weekly,
            format!("{text_of_wf}\n[schedule]\ncron = \"0 9 * * MON\"\ntimezone = \"Europe/Paris\"\n"),
        )
        .unwrap();
        let added: Value =
            serde_json::from_str(&env.ok(&["schedule", "add", weekly.to_str().unwrap(), "--json"]))
                .unwrap();
        assert_eq!(added["next"], "2026-01-19T08:00:00Z", "Monday 09:00 in Paris");
        c.goto(&format!("{}/#/schedules", served.api)).await.unwrap();
        until("the schedule", Duration::from_secs(10), || async {
            let shown = text_now(&c, "#schedules tr[data-schedule='1']").await;
            shown.contains("0 9 * * MON") && shown.contains("2026-01-19T08:00:00Z")
        })
        .await;

        // The cookie changes nothing without the page's header, and ends
        // with a sign-out.
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let post = http
            .post(format!("{}/api/v1/runs/1/pause", served.api))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 403);
        let get = |http: reqwest::Client| {
            let (api, cookie) = (served.api.clone(), cookie.clone());
            async move {
                http.get(format!("{api}/api/v1/runs"))
                    .header("cookie", cookie)
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        };
        assert_eq!(get(http.clone()).await, 200);
        click(&c, "#sign-out").await;
        c.wait().for_element(Locator::Id("token")).await.unwrap();
        assert_eq!(get(http).await, 401, "the session ended");
        c.close().await.unwrap();
    });
}

/// A workflow of thirty activities stays usable: it is drawn whole, every
/// activity can be reached with the keyboard (the graph scrolls to it), and
/// `Fit` shows it all.
#[test]
fn thirty_activities_can_each_be_reached() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let served = Served::start(&env, &["--now", T0]);
    let token = env.ok(&["token", "create", "ui"]).trim().to_string();
    let wf = env.data().join("thirty.toml");
    std::fs::write(&wf, thirty()).unwrap();
    let out = env.run(&["run", "--dry-run", wf.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    runtime().block_on(async {
        let (_driver, c) = browser().await;
        c.goto(&format!("{}/#/runs/dry-1", served.api))
            .await
            .unwrap();
        sign_in(&c, &token).await;
        until(
            "thirty activities drawn",
            Duration::from_secs(20),
            || async {
                let (_, nodes) = graph_texts(&c).await;
                nodes.len() == 30 && nodes.values().all(|n| n["state"] != "")
            },
        )
        .await;
        // Tab from the zoom buttons through every activity: each comes into
        // the graph's view when it has the focus.
        c.find(Locator::Css(".toolbar button:last-child"))
            .await
            .unwrap()
            .send_keys("")
            .await
            .unwrap();
        let mut reached = std::collections::BTreeSet::new();
        for _ in 0..30 {
            c.active_element()
                .await
                .unwrap()
                .send_keys("\u{E004}")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let v = js(
                &c,
                "const g = document.activeElement;
                 const box = document.getElementById('graph').getBoundingClientRect();
                 const r = g.getBoundingClientRect();
                 return [g.dataset ? g.dataset.activity : null,
                   r.left >= box.left - 1 && r.right <= box.right + 1 && r.top >= box.top - 1
                   && r.bottom <= box.bottom + 1];",
            )
            .await;
            let id = v[0]
                .as_str()
                .expect("an activity has the focus")
                .to_string();
            assert_eq!(v[1], true, "{id} scrolled into view");
            reached.insert(id);
        }
        assert_eq!(reached.len(), 30, "{reached:?}");
        // Enter on the focused one opens its details.
        c.active_element()
            .await
            .unwrap()
            .send_keys("\u{E007}")
            .await
            .unwrap();
        until("its details", Duration::from_secs(10), || async {
            c.find(Locator::Id("details-title")).await.is_ok()
        })
        .await;
        // Fit shows the whole graph in the panel, without scrolling.
        let fit = c
            .find(Locator::Css(".toolbar button:nth-of-type(3)"))
            .await
            .unwrap();
        assert_eq!(fit.text().await.unwrap(), "Fit");
        fit.click().await.unwrap();
        let sizes = js(
            &c,
            "const svg = document.querySelector('#graph svg').getBoundingClientRect();
             const box = document.getElementById('graph');
             return [svg.width, box.clientWidth, svg.height, box.clientHeight,
                     box.scrollWidth > box.clientWidth || box.scrollHeight > box.clientHeight];",
        )
        .await;
        let n = |i: usize| sizes[i].as_f64().unwrap();
        assert!(n(0) <= n(1) + 1.0 && n(2) <= n(3) + 1.0, "{sizes}");
        assert_eq!(sizes[4], false, "nothing to scroll: {sizes}");
        // A dry run's deliveries say what they would send.
        let (_, nodes) = graph_texts(&c).await;
        assert!(
            nodes["ios_group_1"]["detail"]
                .as_str()
                .unwrap()
                .starts_with("would send "),
            "{nodes:?}"
        );
        screenshot(&c, "thirty").await;
        // A revoked token ends its sessions: the page asks to sign in.
        env.ok(&["token", "revoke", "ui"]);
        until("the sign-in form", Duration::from_secs(10), || async {
            c.find(Locator::Id("token")).await.is_ok()
        })
        .await;
        let said = text(&c, "#sign-in-error").await;
        assert!(said.contains("session ended"), "{said}");
        c.close().await.unwrap();
    });
}

/// Thirty activities: a query, a split into seven channels' subsets, each
/// through a wait and a split by platform into two pushes.
fn thirty() -> String {
    let mut wf = String::from(
        "name = \"thirty\"\n\n[activity.query]\ntype = \"query\"\nnext = { done = \"by_group\" }\n[activity.query.config]\ndimension = \"subscription\"\nfilter = \"app = 'com.acme.shop'\"\n\n",
    );
    let groups: Vec<String> = (1..=7).map(|i| format!("group_{i}")).collect();
    let next: Vec<String> = groups
        .iter()
        .map(|g| format!("{g} = \"wait_{g}\""))
        .collect();
    wf += &format!(
        "[activity.by_group]\ntype = \"split\"\nnext = {{ {} }}\n[activity.by_group.config]\nsubsets = [\n",
        next.join(", ")
    );
    for (i, g) in groups.iter().enumerate() {
        wf += &format!("  {{ name = \"{g}\", filter = \"id like '%{i}'\" }},\n");
    }
    wf += "]\n\n";
    for g in &groups {
        wf += &format!(
            "[activity.wait_{g}]\ntype = \"wait\"\nnext = {{ done = \"os_{g}\" }}\nconfig = {{ duration = \"1d\" }}\n\n\
             [activity.os_{g}]\ntype = \"split\"\nnext = {{ ios = \"ios_{g}\", android = \"android_{g}\" }}\n\
             [activity.os_{g}.config]\nsubsets = [\n  {{ name = \"ios\", filter = \"platform = 'ios'\" }},\n  {{ name = \"android\", filter = \"platform = 'android'\" }},\n]\n\n\
             [activity.ios_{g}]\ntype = \"apns\"\n[activity.ios_{g}.config]\naccount = \"apns\"\ntopic = \"com.acme.shop\"\ntitle = \"Hello\"\nbody = \"News for {g}\"\n\n\
             [activity.android_{g}]\ntype = \"fcm\"\n[activity.android_{g}.config]\naccount = \"fcm\"\ntitle = \"Hello\"\nbody = \"News for {g}\"\n\n"
        );
    }
    wf
}

/// An activity waiting for a signal says so in the graph and its details,
/// which send the signal: the run goes on, and the relay gets the mail.
#[test]
fn a_waiting_signal_is_sent_from_its_activity() {
    let s = servers();
    let env = Env::new();
    setup(&env, &s);
    let served = Served::start(&env, &["--now", T0]);
    let token = env.ok(&["token", "create", "ui"]).trim().to_string();
    let wf = env.data().join("gate.toml");
    std::fs::write(
        &wf,
        "name = \"gate\"\n\n[activity.query]\ntype = \"query\"\nnext = { done = \"approval\" }\n\
         config = { dimension = \"recipient\", filter = \"email is not empty\" }\n\n\
         [activity.approval]\ntype = \"signal\"\nnext = { done = \"mail\" }\nconfig = { name = \"approved\" }\n\n\
         [activity.mail]\ntype = \"email\"\n\
         config = { account = \"smtp\", from = \"news@acme.example\", subject = \"Approved\", text = \"Hello\" }\n",
    )
    .unwrap();
    env.ok(&["run", wf.to_str().unwrap()]);
    let with_email = read_recipients(&root().join("tests/data/recipients.csv"))
        .values()
        .filter(|r| r.email.is_some())
        .count();
    runtime().block_on(async {
        let (_driver, c) = browser().await;
        c.goto(&format!("{}/#/runs/1", served.api)).await.unwrap();
        sign_in(&c, &token).await;
        until("the waiting signal", Duration::from_secs(20), || async {
            let (_, nodes) = graph_texts(&c).await;
            nodes
                .get("approval")
                .is_some_and(|n| n["state"] == "⏸ signal approved")
        })
        .await;
        assert!(s.rig.smtp.received().is_empty());
        click(&c, "#graph g.node[data-activity='approval']").await;
        until("the signal button", Duration::from_secs(10), || async {
            c.find(Locator::Css("button[data-signal='approved']"))
                .await
                .is_ok()
        })
        .await;
        let said = text(&c, "#details").await;
        assert!(said.contains("for signal approved"), "{said}");
        screenshot(&c, "signal").await;
        click(&c, "button[data-signal='approved']").await;
        until("the mail to go", Duration::from_secs(30), || async {
            let (_, nodes) = graph_texts(&c).await;
            nodes.get("mail").is_some_and(|n| n["state"] == "✓ done")
        })
        .await;
        assert_eq!(s.rig.smtp.received().len(), with_email);
        let meta = text(&c, "#run-meta").await;
        assert!(
            meta.contains("signals: approved at 2026-01-05T09:00:00Z"),
            "{meta}"
        );
        c.close().await.unwrap();
    });
}
