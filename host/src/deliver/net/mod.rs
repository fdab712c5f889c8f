//! The network layer of deliveries: connections and exchanges with
//! providers, under the egress policy and the operator's TLS trust. It
//! knows neither the store nor the plugins' WIT types: it takes requests
//! and messages ready for the wire and returns answers or typed
//! [`error::NetError`]s, which the delivery layer turns into verdicts.

pub mod egress;
pub mod error;
pub mod http;
pub mod probe;
pub mod smtp;
pub mod trust;
