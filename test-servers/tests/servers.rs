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
    assert_eq!(got[0].from, "news@acme.example");
    assert_eq!(got[0].to, vec!["ada@example.com".to_string()]);
    assert_eq!(got[0].subject().as_deref(), Some("Chloé, hello"));
    assert!(
        got[0].text().unwrap().contains(".leading dot"),
        "dot-unstuffed"
    );
    assert!(queued.contains(&got[0].queue_id), "{queued}");
}
