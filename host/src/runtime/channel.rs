//! Channel plugins of every supported contract version behind one type.
//!
//! The host works with the newest channel interface (`0.3.0`); plugins
//! built against older ones are adapted. A `0.2.0` plugin names no answer
//! headers, so it gets every header. A `0.1.0` plugin also gets every
//! header; its messages gain `parts: 1` and no note, and its verdicts map
//! one to one (it can neither quarantine nor record an opt-out).

use wasmtime::Store;

use super::HostState;
use super::bindings::{channel as v1b, channel_v2 as v2b, channel_v3 as v3b};

/// The channel interface the host works with.
pub use v3b::exports::crosscast::plugin0_3_0::channel as wit;

use v1b::exports::crosscast::plugin::channel as v1;
use v2b::exports::crosscast::plugin0_2_0::channel as v2;

/// A linked channel plugin, ready to instantiate.
#[derive(Clone)]
pub enum ChannelPre {
    /// Built against `crosscast:plugin/channel-plugin@0.1.0`.
    V1(v1b::ChannelPluginPre<HostState>),
    /// Built against `crosscast:plugin/channel-plugin@0.2.0`.
    V2(v2b::ChannelPluginPre<HostState>),
    /// Built against `crosscast:plugin/channel-plugin@0.3.0`.
    V3(v3b::ChannelPluginPre<HostState>),
}

/// An instantiated channel plugin.
pub enum Channel {
    /// A 0.1.0 plugin, adapted.
    V1(v1b::ChannelPlugin),
    /// A 0.2.0 plugin, adapted.
    V2(v2b::ChannelPlugin),
    /// A 0.3.0 plugin.
    V3(v3b::ChannelPlugin),
}

impl ChannelPre {
    /// The contract version the plugin was built against.
    pub fn version(&self) -> &'static str {
        match self {
            ChannelPre::V1(_) => "0.1.0",
            ChannelPre::V2(_) => "0.2.0",
            ChannelPre::V3(_) => "0.3.0",
        }
    }

    /// The linked component, to instantiate and to look up other exports
    /// (0.4.0's `channel-preflight`) on the same instance.
    pub fn instance_pre(&self) -> &wasmtime::component::InstancePre<HostState> {
        match self {
            ChannelPre::V1(p) => p.instance_pre(),
            ChannelPre::V2(p) => p.instance_pre(),
            ChannelPre::V3(p) => p.instance_pre(),
        }
    }

    /// The channel of an instance made from [`ChannelPre::instance_pre`].
    pub fn load(
        &self,
        store: &mut Store<HostState>,
        instance: &wasmtime::component::Instance,
    ) -> wasmtime::Result<Channel> {
        Ok(match self {
            ChannelPre::V1(_) => Channel::V1(v1b::ChannelPlugin::new(store, instance)?),
            ChannelPre::V2(_) => Channel::V2(v2b::ChannelPlugin::new(store, instance)?),
            ChannelPre::V3(_) => Channel::V3(v3b::ChannelPlugin::new(store, instance)?),
        })
    }

    /// A fresh instance in `store`.
    pub fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Channel> {
        Ok(match self {
            ChannelPre::V1(p) => Channel::V1(p.instantiate(store)?),
            ChannelPre::V2(p) => Channel::V2(p.instantiate(store)?),
            ChannelPre::V3(p) => Channel::V3(p.instantiate(store)?),
        })
    }
}

/// A descriptor of an older contract as the host's: it names no answer
/// headers (the plugin gets them all) and no suppression list.
macro_rules! descriptor_from {
    ($old:ident, $d:expr) => {{
        let d = $d;
        wit::Descriptor {
            name: d.name,
            version: d.version,
            summary: d.summary,
            target: match d.target {
                $old::Target::Recipient => wit::Target::Recipient,
                $old::Target::Subscription => wit::Target::Subscription,
            },
            answer_headers: None,
            suppression_list: None,
        }
    }};
}

type Call<T> = wasmtime::Result<T>;

impl Channel {
    /// `describe`.
    pub fn describe(&self, st: &mut Store<HostState>) -> Call<wit::Descriptor> {
        match self {
            Channel::V1(c) => {
                let d = c.crosscast_plugin_channel().call_describe(st)?;
                Ok(descriptor_from!(v1, d))
            }
            Channel::V2(c) => {
                let d = c.crosscast_plugin0_2_0_channel().call_describe(st)?;
                Ok(descriptor_from!(v2, d))
            }
            Channel::V3(c) => c.crosscast_plugin0_3_0_channel().call_describe(st),
        }
    }

    /// `configure`: errors as (field, message).
    pub fn configure(
        &self,
        st: &mut Store<HostState>,
        config: &str,
    ) -> Call<Result<(), Vec<(String, String)>>> {
        let r = match self {
            Channel::V1(c) => c.crosscast_plugin_channel().call_configure(st, config)?,
            Channel::V2(c) => c
                .crosscast_plugin0_2_0_channel()
                .call_configure(st, config)?,
            Channel::V3(c) => c
                .crosscast_plugin0_3_0_channel()
                .call_configure(st, config)?,
        };
        Ok(r.map_err(|es| es.into_iter().map(|e| (e.field, e.message)).collect()))
    }

    /// `build`.
    pub fn build(
        &self,
        st: &mut Store<HostState>,
        config: &str,
        dimension: &str,
        ids: &[u64],
    ) -> Call<Result<Vec<wit::Prepared>, String>> {
        match self {
            Channel::V3(c) => c
                .crosscast_plugin0_3_0_channel()
                .call_build(st, config, dimension, ids),
            Channel::V2(c) => Ok(c
                .crosscast_plugin0_2_0_channel()
                .call_build(st, config, dimension, ids)?
                .map(|ps| ps.into_iter().map(prepared_from_v2).collect())),
            Channel::V1(c) => Ok(c
                .crosscast_plugin_channel()
                .call_build(st, config, dimension, ids)?
                .map(|ps| ps.into_iter().map(prepared_from_v1).collect())),
        }
    }

    /// `classify`.
    pub fn classify(
        &self,
        st: &mut Store<HostState>,
        config: &str,
        answers: &[wit::Answer],
    ) -> Call<Vec<wit::Verdict>> {
        match self {
            Channel::V3(c) => c
                .crosscast_plugin0_3_0_channel()
                .call_classify(st, config, answers),
            Channel::V2(c) => {
                let answers: Vec<v2::Answer> = answers.iter().map(answer_to_v2).collect();
                Ok(c.crosscast_plugin0_2_0_channel()
                    .call_classify(st, config, &answers)?
                    .into_iter()
                    .map(verdict_from_v2)
                    .collect())
            }
            Channel::V1(c) => {
                let answers: Vec<v1::Answer> = answers.iter().map(answer_to_v1).collect();
                Ok(c.crosscast_plugin_channel()
                    .call_classify(st, config, &answers)?
                    .into_iter()
                    .map(|v| match v {
                        v1::Verdict::Sent(id) => wit::Verdict::Sent(id),
                        v1::Verdict::Retry(r) => wit::Verdict::Retry(r),
                        v1::Verdict::Failed(r) => wit::Verdict::Failed(r),
                    })
                    .collect())
            }
        }
    }
}

/// A message of an older contract's bindings as the host's (each version
/// has its own generated types, of the same shape).
macro_rules! message_from {
    ($old:ident, $m:expr) => {
        match $m {
            $old::Message::Email(e) => wit::Message::Email(wit::Email {
                account: e.account,
                from: e.from,
                to: e.to,
                reply_to: e.reply_to,
                subject: e.subject,
                text: e.text,
                html: e.html,
                headers: e.headers,
            }),
            $old::Message::Http(h) => wit::Message::Http(wit::HttpRequest {
                account: h.account,
                method: h.method,
                path: h.path,
                recipient: h.recipient,
                headers: h.headers,
                body: h.body,
            }),
        }
    };
}

/// An answer as an older contract's bindings carry it (every header).
macro_rules! answer_to {
    ($old:ident, $a:expr) => {
        match $a {
            wit::Answer::Smtp(s) => $old::Answer::Smtp($old::SmtpReply {
                code: s.code,
                message: s.message.clone(),
            }),
            wit::Answer::Http(h) => $old::Answer::Http($old::HttpResponse {
                status: h.status,
                headers: h.headers.clone(),
                body: h.body.clone(),
            }),
            wit::Answer::TransportError(e) => $old::Answer::TransportError(e.clone()),
        }
    };
}

fn prepared_from_v1(p: v1::Prepared) -> wit::Prepared {
    match p {
        v1::Prepared::Exclude(reason) => wit::Prepared::Exclude(reason),
        v1::Prepared::Send(m) => wit::Prepared::Send(wit::Outgoing {
            message: message_from!(v1, m),
            parts: 1,
            note: None,
        }),
    }
}

fn answer_to_v1(a: &wit::Answer) -> v1::Answer {
    answer_to!(v1, a)
}

fn prepared_from_v2(p: v2::Prepared) -> wit::Prepared {
    match p {
        v2::Prepared::Exclude(reason) => wit::Prepared::Exclude(reason),
        v2::Prepared::Send(o) => wit::Prepared::Send(wit::Outgoing {
            message: message_from!(v2, o.message),
            parts: o.parts,
            note: o.note,
        }),
    }
}

fn answer_to_v2(a: &wit::Answer) -> v2::Answer {
    answer_to!(v2, a)
}

fn verdict_from_v2(v: v2::Verdict) -> wit::Verdict {
    match v {
        v2::Verdict::Sent(id) => wit::Verdict::Sent(id),
        v2::Verdict::Retry(r) => wit::Verdict::Retry(r),
        v2::Verdict::Failed(r) => wit::Verdict::Failed(r),
        v2::Verdict::Quarantine(r) => wit::Verdict::Quarantine(r),
        v2::Verdict::OptedOut(r) => wit::Verdict::OptedOut(r),
    }
}
