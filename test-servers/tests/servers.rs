//! The loopback servers behave like the real ones on the wire.

use crosscast_test_servers::{SmsApi, SmtpSink};

const SID: &str = "AC11111111111111111111111111111111";

async fn post(
    api: &SmsApi,
    sid: &str,
    auth: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut r = reqwest::Client::new()
        .post(format!(
            "{}/2010-04-01/Accounts/{sid}/Messages.json",
            api.url()
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form.iter()
                .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B").replace(' ', "+")))
                .collect::<Vec<_>>()
                .join("&"),
        );
    if let Some((u, p)) = auth {
        r = r.basic_auth(u, Some(p));
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn sms_api_answers_like_twilio() {
    let api = SmsApi::start(SID, "secret").await.unwrap();
    let ok = [
        ("To", "+15550001234"),
        ("From", "+15550009999"),
        ("Body", "hello there"),
    ];

    let (status, body) = post(&api, SID, None, &ok).await;
    assert_eq!((status, body["code"].as_u64()), (401, Some(20003)));
    let (status, body) = post(&api, SID, Some((SID, "wrong")), &ok).await;
    assert_eq!((status, body["code"].as_u64()), (401, Some(20003)));

    let (status, body) = post(
        &api,
        SID,
        Some((SID, "secret")),
        &[("From", "+15550009999"), ("Body", "x")],
    )
    .await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(21604)));
    let (status, body) = post(
        &api,
        SID,
        Some((SID, "secret")),
        &[("To", "+15550001234"), ("From", "+15550009999")],
    )
    .await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(21602)));
    let (status, body) = post(
        &api,
        SID,
        Some((SID, "secret")),
        &[("To", "12345"), ("From", "+1555"), ("Body", "x")],
    )
    .await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(21211)));
    assert!(body["more_info"].as_str().unwrap().ends_with("/21211"));
    assert!(
        api.received().is_empty(),
        "rejected requests are not recorded"
    );

    let (status, body) = post(&api, SID, Some((SID, "secret")), &ok).await;
    assert_eq!(status, 201);
    let sid = body["sid"].as_str().unwrap();
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["to"], "+15550001234");
    let got = api.received();
    assert_eq!(got.len(), 1);
    assert_eq!(api.received_count(), 1);
    assert_eq!(
        (
            got[0].to.as_str(),
            got[0].body.as_str(),
            got[0].sid.as_str()
        ),
        ("+15550001234", "hello there", sid)
    );
}

#[tokio::test]
async fn smtp_sink_records_envelope_and_content() {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let sink = SmtpSink::start().await.unwrap();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&sink.url())
        .unwrap()
        .build();
    let message = Message::builder()
        .from("Acme <news@acme.example>".parse().unwrap())
        .to("ada@example.com".parse().unwrap())
        .subject("Chloé, hello")
        .body("first line\n.leading dot\n".to_string())
        .unwrap();
    let reply = transport.send(message).await.unwrap();
    assert!(reply.is_positive());
    let queued = reply.message().collect::<Vec<_>>().join(" ");
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(sink.received_count(), 1);
    assert_eq!(
        sink.received_at(0).map(|m| m.queue_id),
        Some(got[0].queue_id.clone())
    );
    assert_eq!(sink.received_at(1).map(|m| m.queue_id), None);
    assert_eq!(got[0].from, "news@acme.example");
    assert_eq!(got[0].to, vec!["ada@example.com".to_string()]);
    assert_eq!(got[0].subject().as_deref(), Some("Chloé, hello"));
    assert!(
        got[0].text().unwrap().contains(".leading dot"),
        "dot-unstuffed"
    );
    assert!(queued.contains(&got[0].queue_id), "{queued}");
}

/// Faults are injected deterministically: scripted replies per address (a
/// 4xx then success, a permanent 5xx), a reply every n-th message, and a
/// dropped connection; only accepted messages count as received.
#[tokio::test]
async fn smtp_sink_injects_scripted_faults() {
    use crosscast_test_servers::{Faults, Reply, SinkOptions};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let mut per_address = std::collections::HashMap::new();
    per_address.insert(
        "soft@example.com".to_string(),
        vec![Reply::new(451, "4.3.0 try again later")],
    );
    per_address.insert(
        "gone@example.com".to_string(),
        vec![Reply::new(550, "5.1.1 no such user"); 3],
    );
    let sink = SmtpSink::start_with(SinkOptions {
        faults: Faults {
            per_address,
            every_nth: Some((5, Reply::new(421, "4.7.0 slow down"))),
            drop_every_nth: Some(7),
            ..Faults::default()
        },
        ..SinkOptions::default()
    })
    .await
    .unwrap();
    let send = |to: &str| {
        let url = sink.url();
        let to = to.to_string();
        async move {
            // A fresh connection per message: a dropped one must not poison the next.
            let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
                .unwrap()
                .build();
            let message = Message::builder()
                .from("news@acme.example".parse().unwrap())
                .to(to.parse().unwrap())
                .subject("hi")
                .body("hello".to_string())
                .unwrap();
            transport.send(message).await
        }
    };
    let soft = send("soft@example.com").await.unwrap_err();
    assert!(soft.is_transient(), "{soft}");
    assert!(
        send("soft@example.com").await.is_ok(),
        "past the script: accepted"
    );
    let hard = send("gone@example.com").await.unwrap_err();
    assert!(hard.is_permanent(), "{hard}");
    assert!(send("ok1@example.com").await.is_ok());
    // The 5th message: the every-n-th reply.
    let fifth = send("ok2@example.com").await.unwrap_err();
    assert!(
        fifth.is_transient() && fifth.to_string().contains("slow down"),
        "{fifth}"
    );
    assert!(send("ok3@example.com").await.is_ok());
    // The 7th: the connection is dropped with no reply.
    let dropped = send("ok4@example.com").await.unwrap_err();
    assert!(!dropped.is_permanent(), "{dropped}");

    let codes: Vec<Option<u16>> = sink.attempts().iter().map(|a| a.code).collect();
    assert_eq!(
        codes,
        [
            Some(451),
            Some(250),
            Some(550),
            Some(250),
            Some(421),
            Some(250),
            None
        ]
    );
    let accepted: Vec<String> = sink.received().iter().map(|m| m.to[0].clone()).collect();
    assert_eq!(
        accepted,
        ["soft@example.com", "ok1@example.com", "ok3@example.com"]
    );
}

/// Twilio errors are injected per number (invalid number, unsubscribed, rate
/// limited with Retry-After) and every n-th request; only accepted messages
/// count as received.
#[tokio::test]
async fn sms_api_injects_twilio_errors() {
    use crosscast_test_servers::{SmsFault, SmsFaults};
    let mut per_number = std::collections::HashMap::new();
    per_number.insert(
        "+15550000001".to_string(),
        vec![SmsFault::new(400, 21211, "Invalid 'To' Phone Number")],
    );
    per_number.insert(
        "+15550000002".to_string(),
        vec![SmsFault::new(
            400,
            21610,
            "Attempt to send to unsubscribed recipient",
        )],
    );
    per_number.insert(
        "+15550000003".to_string(),
        vec![SmsFault {
            retry_after: Some(7),
            ..SmsFault::new(429, 20429, "Too Many Requests")
        }],
    );
    let api = SmsApi::start_with(
        SID,
        "token",
        SmsFaults {
            per_number,
            every_nth: Some((6, SmsFault::new(503, 20500, "Service unavailable"))),
        },
    )
    .await
    .unwrap();
    let send = |to: &'static str| {
        let api = api.clone();
        async move {
            reqwest::Client::new()
                .post(format!(
                    "{}/2010-04-01/Accounts/{SID}/Messages.json",
                    api.url()
                ))
                .basic_auth(SID, Some("token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "To={}&From=%2B15550009999&Body=hi",
                    to.replace('+', "%2B")
                ))
                .send()
                .await
                .unwrap()
        }
    };
    let r = send("+15550000001").await;
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], 21211);
    let r = send("+15550000002").await;
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], 21610);
    let r = send("+15550000003").await;
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    // Past its script, the number is accepted.
    assert_eq!(send("+15550000003").await.status().as_u16(), 201);
    assert_eq!(send("+15550000004").await.status().as_u16(), 201);
    // The 6th request: the every-n-th answer.
    assert_eq!(send("+15550000005").await.status().as_u16(), 503);
    let got: Vec<String> = api.received().iter().map(|m| m.to.clone()).collect();
    assert_eq!(got, ["+15550000003", "+15550000004"]);
}
