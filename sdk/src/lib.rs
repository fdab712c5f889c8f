//! The Crosscast plugin SDK.
//!
//! A plugin is a WebAssembly component implementing one world of the WIT in
//! `wit/` (a copy of which ships inside this crate): an activity or a
//! delivery channel. Implement [`activity::Activity`] or
//! [`channel::Channel`] and register the type with [`export_activity!`] or
//! [`export_channel!`]; no cargo feature is needed (the `activity` and
//! `channel` features of earlier versions are accepted and do nothing):
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

mod builders;
pub mod config;
pub mod filter;
pub mod push;
pub mod select;
pub mod sms;
pub mod template;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

/// The WIT bindings: the activity world of `crosscast:plugin@0.5.0` and
/// the channel world of `crosscast:plugin@0.4.0`, generated from the copy
/// of the WIT inside this package (`sdk/wit/`, identical to the
/// repository's `wit/`). They export their 0.5.0 (activity) or 0.3.0
/// (channel) interface and 0.4.0's `preflight`; the channel world reuses
/// the activity world's imports, so the host helpers serve both; a
/// component carries only the world its export macro names.
#[doc(hidden)]
pub mod bindings {
    /// The activity world (`crosscast:plugin/activity-plugin@0.5.0`).
    pub mod activity {
        wit_bindgen::generate!({
            world: "crosscast:plugin/activity-plugin@0.5.0",
            path: ["wit/0.1.0", "wit/0.3.0", "wit/0.4.0", "wit/0.5.0"],
            generate_all,
            pub_export_macro: true,
            export_macro_name: "__export_activity_world",
            default_bindings_module: "crosscast_sdk::bindings::activity",
        });
    }

    /// The channel world (`crosscast:plugin/channel-plugin@0.4.0`).
    pub mod channel {
        wit_bindgen::generate!({
            world: "crosscast:plugin/channel-plugin@0.4.0",
            path: ["wit/0.1.0", "wit/0.3.0", "wit/0.4.0"],
            with: {
                "crosscast:plugin/types@0.1.0": crate::bindings::activity::crosscast::plugin0_1_0::types,
                "crosscast:plugin/log@0.1.0": crate::bindings::activity::crosscast::plugin0_1_0::log,
                "crosscast:plugin/clock@0.1.0": crate::bindings::activity::crosscast::plugin0_1_0::clock,
                "crosscast:plugin/attributes@0.1.0": crate::bindings::activity::crosscast::plugin0_1_0::attributes,
                "crosscast:plugin/accounts@0.1.0": generate,
                "crosscast:plugin/references@0.4.0": crate::bindings::activity::crosscast::plugin0_4_0::references,
            },
            // Plugins' tests compare verdicts and messages.
            additional_derives: [PartialEq],
            pub_export_macro: true,
            export_macro_name: "__export_channel_world",
            default_bindings_module: "crosscast_sdk::bindings::channel",
        });
    }

    /// The imported interfaces (`crosscast:plugin@0.1.0`).
    pub use self::activity::crosscast::plugin0_1_0 as imported;
    /// The accounts interface, imported by channels only.
    pub use self::channel::crosscast::plugin0_1_0::accounts;
}

mod host;
pub use host::*;

/// This SDK's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The custom section in which the export macros stamp a component with the
/// SDK version and the world it implements, so `crosscast plugin install`
/// can say what a plugin was built with (and refuse what it cannot load).
pub const STAMP_SECTION: &str = "crosscast-sdk";

/// The stamp of an activity component: `sdk=VERSION;world=WORLD`.
#[doc(hidden)]
pub const ACTIVITY_STAMP: &str = concat!(
    "sdk=",
    env!("CARGO_PKG_VERSION"),
    ";world=crosscast:plugin/activity-plugin@0.5.0"
);

/// The stamp of a channel component.
#[doc(hidden)]
pub const CHANNEL_STAMP: &str = concat!(
    "sdk=",
    env!("CARGO_PKG_VERSION"),
    ";world=crosscast:plugin/channel-plugin@0.4.0"
);

/// A stamp as the byte array a `link_section` static needs.
#[doc(hidden)]
pub const fn stamp_bytes<const N: usize>(stamp: &str) -> [u8; N] {
    let bytes = stamp.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Writes `stamp` into the component's [`STAMP_SECTION`].
#[doc(hidden)]
#[macro_export]
macro_rules! __stamp {
    ($stamp:path) => {
        #[cfg(target_arch = "wasm32")]
        #[unsafe(link_section = "crosscast-sdk")]
        #[used]
        static __CROSSCAST_SDK_STAMP: [u8; $stamp.len()] =
            $crate::stamp_bytes::<{ $stamp.len() }>($stamp);
    };
}

/// How many ids a plugin reads from the host per call: crossing the wasm
/// boundary is cheap per batch and expensive per record.
pub const BATCH: u32 = 16_384;

/// Everything an activity plugin needs.
pub mod activity {
    pub use crate::bindings::activity::exports::crosscast::plugin0_5_0::activity::{
        Descriptor, Input, Outcome, Signal, SignalWait, Task,
    };
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
pub mod channel {
    pub use crate::bindings::accounts::{Account, get as account};
    pub use crate::bindings::channel::exports::crosscast::plugin0_3_0::channel::{
        Answer, Descriptor, Email, HttpRequest, HttpResponse, Message, Outgoing, Prepared,
        SmtpReply, Target, Verdict,
    };
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
        /// The public parameters the channel may read from any account
        /// granted to it (APNs' `topic`): `plugin grant` checks the
        /// account's parameter names against them.
        fn account_params() -> Vec<String> {
            Vec::new()
        }
    }
}

/// Noted references in the WIT's types.
#[doc(hidden)]
pub fn __references(
    noted: Vec<config::Reference>,
) -> Vec<bindings::activity::crosscast::plugin0_4_0::references::Reference> {
    use bindings::activity::crosscast::plugin0_4_0::references::{Reference, Referent};
    noted
        .into_iter()
        .map(|r| Reference {
            field: r.field,
            offset: r.offset,
            referent: match r.referent {
                config::Referent::Attribute(a) => Referent::Attribute(a),
                config::Referent::Dimension(d) => Referent::Dimension(d),
                config::Referent::Account(a) => Referent::Account(a),
                config::Referent::AccountParam(a, p) => Referent::AccountParam((a, p)),
            },
        })
        .collect()
}

/// Registers a type implementing [`activity::Activity`] as the component's export.
#[macro_export]
macro_rules! export_activity {
    ($t:ty) => {
        struct __CrosscastExport;
        impl $crate::bindings::activity::exports::crosscast::plugin0_5_0::activity::Guest
            for __CrosscastExport {
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
        impl $crate::bindings::activity::exports::crosscast::plugin0_4_0::activity_preflight::Guest
            for __CrosscastExport {
            fn config_needs(
                config: String,
            ) -> $crate::bindings::activity::exports::crosscast::plugin0_4_0::activity_preflight::Needs {
                let (_, noted) = $crate::config::noting(|| {
                    <$t as $crate::activity::Activity>::configure(&config)
                });
                $crate::bindings::activity::exports::crosscast::plugin0_4_0::activity_preflight::Needs {
                    reads: noted.reads,
                    emits: noted.emits,
                    references: $crate::__references(noted.references),
                }
            }
        }
        $crate::bindings::activity::__export_activity_world!(
            __CrosscastExport with_types_in $crate::bindings::activity
        );
        $crate::__stamp!($crate::ACTIVITY_STAMP);
    };
}

/// Registers a type implementing [`channel::Channel`] as the component's export.
#[macro_export]
macro_rules! export_channel {
    ($t:ty) => {
        struct __CrosscastExport;
        impl $crate::bindings::channel::exports::crosscast::plugin0_3_0::channel::Guest
            for __CrosscastExport {
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
        impl $crate::bindings::channel::exports::crosscast::plugin0_4_0::channel_preflight::Guest
            for __CrosscastExport {
            fn config_needs(
                config: String,
            ) -> Vec<$crate::bindings::activity::crosscast::plugin0_4_0::references::Reference> {
                let (_, noted) = $crate::config::noting(|| {
                    <$t as $crate::channel::Channel>::configure(&config)
                });
                $crate::__references(noted.references)
            }
            fn account_params() -> Vec<String> {
                <$t as $crate::channel::Channel>::account_params()
            }
        }
        $crate::bindings::channel::__export_channel_world!(
            __CrosscastExport with_types_in $crate::bindings::channel
        );
        $crate::__stamp!($crate::CHANNEL_STAMP);
    };
}
