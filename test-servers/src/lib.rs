//! Loopback servers that speak the providers' protocols and record what they
//! receive: an SMTP sink and a Twilio-compatible SMS API. Used by the tests
//! and by `crosscast demo`; they bind 127.0.0.1 only.

pub mod sample;
pub mod sms;
pub mod smtp;

pub use sms::{ReceivedSms, SmsApi};
pub use smtp::{ReceivedMail, SinkOptions, SmtpSink};
