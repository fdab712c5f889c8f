//! Loopback servers that speak the providers' protocols and record what they
//! receive: an SMTP sink and a Twilio-compatible SMS API. Used by the tests
//! and by `crosscast demo`; they bind 127.0.0.1 only.

pub mod sample;
pub mod smtp;
pub mod sms;

pub use smtp::{ReceivedMail, SmtpSink};
pub use sms::{ReceivedSms, SmsApi};
