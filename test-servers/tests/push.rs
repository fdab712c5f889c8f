//! The APNs and FCM servers are as strict as the real ones.

use crosscast_test_servers::keys::{ApnsKey, ServiceAccount};
use crosscast_test_servers::{ApnsConfig, ApnsServer, FcmConfig, FcmServer, TestTls};
use serde_json::json;

const TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn provider_token(key: &ApnsKey, kid: &str, iss: &str, iat: u64) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.into());
    let k = jsonwebtoken::EncodingKey::from_ec_pem(key.p8.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &json!({ "iss": iss, "iat": iat }), &k).unwrap()
}

fn client(tls: &TestTls, http1_only: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).unwrap());
    let b = if http1_only { b.http1_only() } else { b };
    b.build().unwrap()
}

async fn apns() -> (TestTls, ApnsKey, ApnsServer) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = TestTls::new().unwrap();
    let key = ApnsKey::generate().unwrap();
    let server = ApnsServer::start(
        &tls,
        ApnsConfig {
            team_id: "TEAM".into(),
            key_id: "KID".into(),
            public_key_pem: key.public_pem.clone(),
        },
    )
    .await
    .unwrap();
    (tls, key, server)
}

#[tokio::test]
async fn apns_speaks_http2_over_tls_only_and_checks_the_provider_token() {
    let (tls, key, server) = apns().await;
    let url = format!("{}/3/device/{TOKEN}", server.url());
    let payload = json!({ "aps": { "alert": { "title": "t", "body": "b" } } }).to_string();
    let push = |c: &reqwest::Client, bearer: String, topic: Option<&str>, body: String| {
        let mut r = c
            .post(&url)
            .header("authorization", format!("bearer {bearer}"))
            .body(body);
        if let Some(t) = topic {
            r = r.header("apns-topic", t);
        }
        r.send()
    };
    let good = provider_token(&key, "KID", "TEAM", now());
    let h2 = client(&tls, false);

    let ok = push(&h2, good.clone(), Some("com.acme.shop"), payload.clone())
        .await
        .unwrap();
    assert_eq!(ok.version(), reqwest::Version::HTTP_2);
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().contains_key("apns-id"));
    assert_eq!(server.received().len(), 1);
    assert_eq!(server.received_count(), 1);

    // HTTP/1.1 and plaintext are refused.
    assert!(
        push(
            &client(&tls, true),
            good.clone(),
            Some("t"),
            payload.clone()
        )
        .await
        .is_err(),
        "HTTP/1.1 refused"
    );
    let plain = reqwest::Client::new()
        .post(format!("http://{}/3/device/{TOKEN}", server.addr))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plaintext refused"
    );

    let reason = |r: reqwest::Response| async move {
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap()["reason"].clone(),
        )
    };
    let r = push(&h2, good.clone(), None, payload.clone())
        .await
        .unwrap();
    assert_eq!(reason(r).await, (400, json!("MissingTopic")));
    let other = ApnsKey::generate().unwrap();
    let r = push(
        &h2,
        provider_token(&other, "KID", "TEAM", now()),
        Some("t"),
        payload.clone(),
    )
    .await
    .unwrap();
    assert_eq!(reason(r).await, (403, json!("InvalidProviderToken")));
    let r = push(
        &h2,
        provider_token(&key, "OTHER", "TEAM", now()),
        Some("t"),
        payload.clone(),
    )
    .await
    .unwrap();
    assert_eq!(reason(r).await, (403, json!("InvalidProviderToken")));
    let r = push(
        &h2,
        provider_token(&key, "KID", "TEAM", now() - 3700),
        Some("t"),
        payload.clone(),
    )
    .await
    .unwrap();
    assert_eq!(reason(r).await, (403, json!("ExpiredProviderToken")));
    let big = json!({ "aps": { "alert": "x".repeat(5000) } }).to_string();
    let r = push(&h2, good.clone(), Some("t"), big).await.unwrap();
    assert_eq!(reason(r).await, (413, json!("PayloadTooLarge")));
    assert_eq!(
        server.received().len(),
        1,
        "only the good push was recorded"
    );

    // A client that does not trust the test CA cannot connect at all.
    let untrusting = reqwest::Client::builder().build().unwrap();
    assert!(untrusting.post(&url).send().await.is_err());
}

#[tokio::test]
async fn fcm_issues_tokens_for_valid_assertions_and_requires_them() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = TestTls::new().unwrap();
    let sa = ServiceAccount::generate("proj").unwrap();
    let server = FcmServer::start(
        &tls,
        FcmConfig {
            project_id: "proj".into(),
            client_email: sa.client_email.clone(),
            public_key_pem: sa.public_pem.clone(),
        },
    )
    .await
    .unwrap();
    let c = client(&tls, false);
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(sa.private_pem.as_bytes()).unwrap();
    let assertion = |aud: &str, scope: &str| {
        let claims = json!({ "iss": sa.client_email, "scope": scope, "aud": aud, "iat": now(), "exp": now() + 3600 });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .unwrap()
    };
    let exchange = |grant: &str, a: String| {
        c.post(server.token_uri())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type={}&assertion={a}",
                grant.replace(':', "%3A")
            ))
            .send()
    };
    let jwt_bearer = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

    let r = exchange("password", assertion(&server.token_uri(), SCOPE))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = exchange(jwt_bearer, assertion("https://elsewhere/token", SCOPE))
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let r = exchange(
        jwt_bearer,
        assertion(
            &server.token_uri(),
            "https://www.googleapis.com/auth/cloud-platform.read-only",
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_scope"
    );
    let r = exchange(jwt_bearer, assertion(&server.token_uri(), SCOPE))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token: serde_json::Value = r.json().await.unwrap();
    let access = token["access_token"].as_str().unwrap().to_string();
    assert!(token["expires_in"].as_i64().unwrap() > 0);

    let send = |bearer: &str, body: serde_json::Value| {
        c.post(format!("{}/v1/projects/proj/messages:send", server.url()))
            .bearer_auth(bearer)
            .json(&body)
            .send()
    };
    let msg = json!({ "message": { "token": "device-1", "notification": { "title": "t", "body": "b" } } });
    let r = send("made-up", msg.clone()).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = send(&access, json!({ "message": {} })).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = send(&access, msg).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.json::<serde_json::Value>().await.unwrap()["name"]
            .as_str()
            .unwrap()
            .starts_with("projects/proj/messages/")
    );
    assert_eq!(server.received().len(), 1);
    assert_eq!(server.received_count(), 1);
    assert_eq!(server.received()[0].token, "device-1");
}

/// APNs faults per device token (410 Unregistered with a timestamp, 400
/// BadDeviceToken, 429 with Retry-After) and every n-th push.
#[tokio::test]
async fn apns_injects_faults_per_token() {
    use crosscast_test_servers::{PushFault, PushFaults};
    let (tls, key, server) = apns().await;
    let gone = "b".repeat(64);
    let busy = "c".repeat(64);
    let mut per_token = std::collections::HashMap::new();
    per_token.insert(gone.clone(), vec![PushFault::new(410, "Unregistered")]);
    per_token.insert(
        busy.clone(),
        vec![PushFault {
            retry_after: Some(3),
            ..PushFault::new(429, "TooManyRequests")
        }],
    );
    per_token.insert(
        TOKEN.to_string(),
        vec![PushFault::new(400, "BadDeviceToken")],
    );
    server.inject(PushFaults {
        per_token,
        every_nth: Some((5, PushFault::new(503, "ServiceUnavailable"))),
        ..PushFaults::default()
    });
    let h2 = client(&tls, false);
    let bearer = provider_token(&key, "KID", "TEAM", now());
    let push = |token: String| {
        h2.post(format!("{}/3/device/{token}", server.url()))
            .header("authorization", format!("bearer {bearer}"))
            .header("apns-topic", "com.acme.shop")
            .body(json!({ "aps": { "alert": "hi" } }).to_string())
            .send()
    };
    let r = push(gone.clone()).await.unwrap();
    assert_eq!(r.status(), 410);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "Unregistered");
    assert!(body["timestamp"].is_u64(), "{body}");
    let r = push(TOKEN.to_string()).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = push(busy.clone()).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    assert_eq!(
        push(busy.clone()).await.unwrap().status(),
        200,
        "past its script"
    );
    assert_eq!(
        push("d".repeat(64)).await.unwrap().status(),
        503,
        "the 5th push"
    );
    assert_eq!(server.received().len(), 1);

    // A slow provider: every answer waits.
    server.inject(PushFaults {
        delay: std::time::Duration::from_millis(300),
        ..PushFaults::default()
    });
    let started = std::time::Instant::now();
    assert_eq!(push("e".repeat(64)).await.unwrap().status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}

/// FCM faults per registration token: UNREGISTERED (404), QUOTA_EXCEEDED
/// (429 with Retry-After), UNAVAILABLE (503), with Google's error shape.
#[tokio::test]
async fn fcm_injects_faults_per_token() {
    use crosscast_test_servers::{PushFault, PushFaults};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = TestTls::new().unwrap();
    let sa = ServiceAccount::generate("proj").unwrap();
    let server = FcmServer::start(
        &tls,
        FcmConfig {
            project_id: "proj".into(),
            client_email: sa.client_email.clone(),
            public_key_pem: sa.public_pem.clone(),
        },
    )
    .await
    .unwrap();
    let mut per_token = std::collections::HashMap::new();
    per_token.insert(
        "gone".to_string(),
        vec![PushFault::new(404, "UNREGISTERED")],
    );
    per_token.insert(
        "quota".to_string(),
        vec![PushFault {
            retry_after: Some(30),
            ..PushFault::new(429, "QUOTA_EXCEEDED")
        }],
    );
    per_token.insert("down".to_string(), vec![PushFault::new(503, "UNAVAILABLE")]);
    server.inject(PushFaults {
        per_token,
        every_nth: None,
        ..PushFaults::default()
    });
    let c = client(&tls, false);
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(sa.private_pem.as_bytes()).unwrap();
    let claims = json!({ "iss": sa.client_email, "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "aud": server.token_uri(), "iat": now(), "exp": now() + 3600 });
    let assertion = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .unwrap();
    let token: serde_json::Value = c
        .post(server.token_uri())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap().to_string();
    let send = |device: &str| {
        c.post(format!("{}/v1/projects/proj/messages:send", server.url()))
            .bearer_auth(&access)
            .json(&json!({ "message": { "token": device, "notification": { "title": "t" } } }))
            .send()
    };
    let code = |v: &serde_json::Value| v["error"]["details"][0]["errorCode"].clone();
    let r = send("gone").await.unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"]["status"].clone(), code(&v)),
        (json!("NOT_FOUND"), json!("UNREGISTERED"))
    );
    let r = send("quota").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "30");
    assert_eq!(code(&r.json().await.unwrap()), json!("QUOTA_EXCEEDED"));
    let r = send("down").await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(send("fine").await.unwrap().status(), 200);
    assert_eq!(server.received().len(), 1);
}
