//! The Crosscast plugin SDK.
//!
//! A plugin is a WebAssembly component implementing one world of the WIT in
//! `wit/`: an activity (`features = ["activity"]`) or a delivery channel
//! (`features = ["channel"]`). Implement [`Activity`] or [`Channel`] and
//! register the type with [`export_activity!`] or [`export_channel!`]:
//!
//! ```ignore
//! use crosscast_sdk::activity::*;
//! struct Pass;
//! impl Activity for Pass { /* describe, configure, execute */ }
//! crosscast_sdk::export_activity!(Pass);
//! ```
//!
//! The [`filter`] language and [`config`] helpers work natively too, so
//! plugin logic can be unit-tested without a wasm runtime.

pub mod config;
pub mod filter;
#[cfg(feature = "channel")]
pub mod push;
pub mod select;
pub mod sms;
#[cfg(feature = "channel")]
pub mod template;

#[cfg(all(feature = "activity", feature = "channel"))]
compile_error!("enable one of the features `activity` or `channel`: a plugin implements one world");

#[cfg(feature = "activity")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "activity-plugin",
        path: "../wit/0.1.0",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "crosscast_sdk::bindings",
    });
    /// The imported interfaces (`crosscast:plugin@0.1.0`).
    pub use self::crosscast::plugin as imported;
    /// The exported interface.
    pub use self::exports::crosscast::plugin as exported;
}

#[cfg(feature = "channel")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "crosscast:plugin/channel-plugin@0.3.0",
        path: ["../wit/0.1.0", "../wit/0.3.0"],
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "crosscast_sdk::bindings",
    });
    /// The imported interfaces (`crosscast:plugin@0.1.0`).
    pub use self::crosscast::plugin0_1_0 as imported;
    /// The exported interface (`crosscast:plugin/channel@0.3.0`).
    pub use self::exports::crosscast::plugin0_3_0 as exported;
}

#[cfg(any(feature = "activity", feature = "channel"))]
mod host;
#[cfg(any(feature = "activity", feature = "channel"))]
pub use host::*;

/// How many ids a plugin reads from the host per call: crossing the wasm
/// boundary is cheap per batch and expensive per record.
pub const BATCH: u32 = 16_384;

/// Everything an activity plugin needs.
#[cfg(feature = "activity")]
pub mod activity {
    pub use crate::bindings::exported::activity::{Descriptor, Input, Outcome, Task};
    pub use crate::bindings::imported::population::{Population, scan};
    pub use crate::config::ConfigError;
    pub use crate::filter::{Column, Columns, Field, Filter, merge_fields};
    pub use crate::host::*;

    /// An activity type: the logic of one kind of workflow node.
    pub trait Activity {
        /// Name, version and how many inputs one execution takes.
        fn describe() -> Descriptor;
        /// Checks a config (JSON) and returns the outgoing transitions it gives.
        fn configure(config: &str) -> Result<Vec<String>, Vec<ConfigError>>;
        /// Runs one execution on the populations that arrived.
        fn execute(task: Task) -> Result<Outcome, String>;
    }

    /// Adds ids to the population leaving on `transition`.
    pub fn emit(transition: &str, dimension: &str, ids: &[u64]) -> Result<(), String> {
        crate::bindings::imported::output::emit(transition, dimension, ids)
    }

    /// Most ids [`Outputs`] holds per transition before handing them to the host.
    const FLUSH_AT: usize = 262_144;

    /// Buffers emitted ids per transition and hands them to the host in large
    /// lists (2 MiB), so an activity crosses the boundary once per 262,144 ids
    /// emitted rather than once per batch read. Call [`Outputs::finish`] at
    /// the end.
    #[derive(Default)]
    pub struct Outputs {
        pending: Vec<(String, String, Vec<u64>)>,
    }

    impl Outputs {
        /// An empty buffer.
        pub fn new() -> Outputs {
            Outputs::default()
        }

        /// Adds ids to the population leaving on `transition`.
        pub fn emit(
            &mut self,
            transition: &str,
            dimension: &str,
            ids: &[u64],
        ) -> Result<(), String> {
            let i = match self.pending.iter().position(|(t, _, _)| t == transition) {
                Some(i) => i,
                None => {
                    self.pending
                        .push((transition.to_string(), dimension.to_string(), Vec::new()));
                    self.pending.len() - 1
                }
            };
            let (t, d, buf) = &mut self.pending[i];
            if d != dimension {
                // The host reports the mismatch with its own message.
                return emit(t, dimension, ids);
            }
            buf.extend_from_slice(ids);
            if buf.len() >= FLUSH_AT {
                emit(t, d, buf)?;
                buf.clear();
            }
            Ok(())
        }

        /// Hands every buffered id to the host. A transition that was emitted
        /// on, even with no ids, is announced with its dimension.
        pub fn finish(self) -> Result<(), String> {
            for (t, d, buf) in self.pending {
                emit(&t, &d, &buf)?;
            }
            Ok(())
        }
    }

    /// Calls `f` on each batch of a population with the columns of `fields`,
    /// fetched in the same call, in ascending id order.
    pub fn for_each_batch_with(
        population: &Population,
        fields: &[Field],
        mut f: impl FnMut(&[u64], &Columns) -> Result<(), String>,
    ) -> Result<(), String> {
        population.rewind();
        let wit = crate::host::wit_fields(fields);
        loop {
            let batch = population.read_with(crate::BATCH, &wit)?;
            if batch.ids.is_empty() {
                return Ok(());
            }
            let columns = crate::host::keyed(fields, batch.columns, batch.ids.len());
            f(&batch.ids, &columns)?;
        }
    }

    /// The one dimension of a join's inputs, ignoring empty ones (a skipped
    /// transition arrives empty); an error when they differ.
    pub fn common_dimension(inputs: &[Input]) -> Result<Option<String>, String> {
        let mut found: Option<(String, &str)> = None;
        for i in inputs {
            if i.population.count() == 0 {
                continue;
            }
            let d = i.population.dimension();
            match &found {
                None => found = Some((d, &i.source)),
                Some((f, source)) if *f != d => {
                    return Err(format!(
                        "inputs of different dimensions: `{f}` from {source}, `{d}` from {}",
                        i.source
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(found.map(|(d, _)| d))
    }

    /// Calls `f` on each batch of a population, in ascending id order.
    pub fn for_each_batch(
        population: &Population,
        mut f: impl FnMut(&[u64]) -> Result<(), String>,
    ) -> Result<(), String> {
        population.rewind();
        loop {
            let ids = population.read(crate::BATCH);
            if ids.is_empty() {
                return Ok(());
            }
            f(&ids)?;
        }
    }
}

/// Everything a channel plugin needs.
#[cfg(feature = "channel")]
pub mod channel {
    pub use crate::bindings::exported::channel::{
        Answer, Descriptor, Email, HttpRequest, HttpResponse, Message, Outgoing, Prepared,
        SmtpReply, Target, Verdict,
    };
    pub use crate::bindings::imported::accounts::{Account, get as account};
    pub use crate::config::ConfigError;
    pub use crate::host::*;
    pub use crate::push::{devices, param};
    pub use crate::sms::Segments;
    pub use crate::template::{Rows, Templates, row_context};

    /// Sends `message` as one billable part, without a note.
    pub fn send(message: Message) -> Prepared {
        Prepared::Send(Outgoing {
            message,
            parts: 1,
            note: None,
        })
    }

    /// A response header's value (names compare without case).
    pub fn header<'a>(response: &'a HttpResponse, name: &str) -> Option<&'a str> {
        response
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Retry-After` of a response, in seconds (the delay form; an HTTP
    /// date is read as "no hint").
    pub fn retry_after(response: &HttpResponse) -> Option<u32> {
        header(response, "retry-after").and_then(|v| v.trim().parse().ok())
    }

    /// A delivery channel: builds messages, reads the provider's answers.
    pub trait Channel {
        /// Name, version and target (per recipient or per subscription).
        fn describe() -> Descriptor;
        /// Checks a config (JSON), templates included.
        fn configure(config: &str) -> Result<(), Vec<ConfigError>>;
        /// One `Prepared` per id, in order.
        fn build(config: &str, dimension: &str, ids: &[u64]) -> Result<Vec<Prepared>, String>;
        /// One verdict per answer, in order.
        fn classify(config: &str, answers: Vec<Answer>) -> Vec<Verdict>;
    }
}

/// Registers a type implementing [`activity::Activity`] as the component's export.
#[cfg(feature = "activity")]
#[macro_export]
macro_rules! export_activity {
    ($t:ty) => {
        struct __CrosscastExport;
        impl $crate::bindings::exported::activity::Guest for __CrosscastExport {
            fn describe() -> $crate::activity::Descriptor {
                <$t as $crate::activity::Activity>::describe()
            }
            fn configure(
                config: String,
            ) -> Result<Vec<String>, Vec<$crate::bindings::imported::types::ConfigError>> {
                <$t as $crate::activity::Activity>::configure(&config)
                    .map_err(|es| es.into_iter().map(Into::into).collect())
            }
            fn execute(task: $crate::activity::Task) -> Result<$crate::activity::Outcome, String> {
                <$t as $crate::activity::Activity>::execute(task)
            }
        }
        $crate::bindings::__export_world!(__CrosscastExport with_types_in $crate::bindings);
    };
}

/// Registers a type implementing [`channel::Channel`] as the component's export.
#[cfg(feature = "channel")]
#[macro_export]
macro_rules! export_channel {
    ($t:ty) => {
        struct __CrosscastExport;
        impl $crate::bindings::exported::channel::Guest for __CrosscastExport {
            fn describe() -> $crate::channel::Descriptor {
                <$t as $crate::channel::Channel>::describe()
            }
            fn configure(
                config: String,
            ) -> Result<(), Vec<$crate::bindings::imported::types::ConfigError>> {
                <$t as $crate::channel::Channel>::configure(&config)
                    .map_err(|es| es.into_iter().map(Into::into).collect())
            }
            fn build(
                config: String,
                dimension: String,
                ids: Vec<u64>,
            ) -> Result<Vec<$crate::channel::Prepared>, String> {
                <$t as $crate::channel::Channel>::build(&config, &dimension, &ids)
            }
            fn classify(
                config: String,
                answers: Vec<$crate::channel::Answer>,
            ) -> Vec<$crate::channel::Verdict> {
                <$t as $crate::channel::Channel>::classify(&config, answers)
            }
        }
        $crate::bindings::__export_world!(__CrosscastExport with_types_in $crate::bindings);
    };
}
