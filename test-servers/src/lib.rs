//! Loopback servers that speak the providers' protocols and record what they
//! receive: an SMTP sink, a Twilio-compatible SMS API, APNs (HTTP/2 over TLS)
//! and FCM HTTP v1 with its OAuth token endpoint. Used by the tests
//! and by `crosscast demo`; they bind 127.0.0.1 only.

pub mod dkim;
pub mod keys;
pub mod pace;
pub mod push;
pub mod rig;
pub mod sample;
pub mod sms;
pub mod smtp;
pub mod tls;
pub mod webhook;
pub mod workflows;

pub use push::{ApnsConfig, ApnsServer, FcmConfig, FcmServer, PushFault, PushFaults, ReceivedPush};
pub use rig::Rig;
pub use sms::{ReceivedSms, SmsApi, SmsFault, SmsFaults};
pub use smtp::{Attempt, Faults, ReceivedMail, Reply, Security, SinkOptions, SmtpSink, Stall};
pub use tls::TestTls;
pub use webhook::{ReceivedHook, Webhook};
