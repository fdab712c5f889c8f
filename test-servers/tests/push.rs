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
    assert_eq!(server.received()[0].token, "device-1");
}
