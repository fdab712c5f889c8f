//! Constructors and builders for the WIT records plugins make. A plugin that
//! builds its descriptor and messages through these keeps compiling when a
//! later WIT version adds a field: the new field gets its default here,
//! where a struct literal would stop compiling.

use crate::activity::{Descriptor as ActivityDescriptor, Outcome, Signal, SignalWait, Task};
use crate::channel::{
    Descriptor as ChannelDescriptor, Email, HttpRequest, HttpResponse, Message, Outgoing, Prepared,
    SmtpReply, Target,
};

impl ActivityDescriptor {
    /// An activity named `name` at `version` (usually
    /// `env!("CARGO_PKG_VERSION")`), taking exactly one input.
    pub fn new(name: &str, version: &str, summary: &str) -> ActivityDescriptor {
        ActivityDescriptor {
            name: name.into(),
            version: version.into(),
            summary: summary.into(),
            min_inputs: 1,
            max_inputs: 1,
        }
    }

    /// Takes between `min` and `max` inputs (a join: 2 and more; a source
    /// such as a query: 0).
    pub fn inputs(mut self, min: u32, max: u32) -> ActivityDescriptor {
        self.min_inputs = min;
        self.max_inputs = max;
        self
    }
}

impl Task {
    /// The first signal named `name` sent to the run, if one was.
    pub fn signal(&self, name: &str) -> Option<&Signal> {
        self.signals.iter().find(|s| s.name == name)
    }
}

impl Outcome {
    /// Execute again when a signal named `name` is sent to the run, or at
    /// `until` (when given) if none came by then.
    pub fn wait_for_signal(name: &str, until: Option<i64>) -> Outcome {
        Outcome::WaitForSignal(SignalWait {
            name: name.into(),
            until,
        })
    }
}

impl ChannelDescriptor {
    /// A channel named `name` at `version`, sending once per `target`
    /// record. It reads every response header and shares no suppression
    /// list (its own, under its name).
    pub fn new(name: &str, version: &str, summary: &str, target: Target) -> ChannelDescriptor {
        ChannelDescriptor {
            name: name.into(),
            version: version.into(),
            summary: summary.into(),
            target,
            answer_headers: None,
            suppression_list: None,
        }
    }

    /// Only these response headers reach `classify` (each costs guest
    /// memory per answer).
    pub fn answer_headers(mut self, names: &[&str]) -> ChannelDescriptor {
        self.answer_headers = Some(names.iter().map(|n| n.to_string()).collect());
        self
    }

    /// Shares the suppression list `list` (say `sms`) instead of its own.
    pub fn suppression_list(mut self, list: &str) -> ChannelDescriptor {
        self.suppression_list = Some(list.into());
        self
    }
}

impl Email {
    /// An email through `account` from `from` to `to` (the recipient's
    /// stored address, optionally with a display name), text only.
    pub fn new(account: &str, from: &str, to: &str, subject: &str, text: &str) -> Email {
        Email {
            account: account.into(),
            from: from.into(),
            to: to.into(),
            reply_to: None,
            subject: subject.into(),
            text: text.into(),
            html: None,
            headers: Vec::new(),
        }
    }

    /// An HTML alternative to the text.
    pub fn html(mut self, html: impl Into<String>) -> Email {
        self.html = Some(html.into());
        self
    }

    /// A `Reply-To` address.
    pub fn reply_to(mut self, address: impl Into<String>) -> Email {
        self.reply_to = Some(address.into());
        self
    }

    /// One more header (the host refuses those it writes itself).
    pub fn header(mut self, name: &str, value: &str) -> Email {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl HttpRequest {
    /// A request through `account` for `recipient` (the stored mobile or
    /// device token it goes to): `path` is appended to the account URL's
    /// path and must start with `/`.
    pub fn new(account: &str, method: &str, path: &str, recipient: &str) -> HttpRequest {
        HttpRequest {
            account: account.into(),
            method: method.into(),
            path: path.into(),
            recipient: recipient.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// One more header (the host drops credentials, `Host` and framing
    /// headers: they are its own).
    pub fn header(mut self, name: &str, value: &str) -> HttpRequest {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> HttpRequest {
        self.body = body.into();
        self
    }
}

impl Outgoing {
    /// A message counted as one billable part, without a note.
    pub fn new(message: Message) -> Outgoing {
        Outgoing {
            message,
            parts: 1,
            note: None,
        }
    }

    /// Counted as `parts` billable parts (SMS segments).
    pub fn parts(mut self, parts: u32) -> Outgoing {
        self.parts = parts;
        self
    }

    /// A note for the delivery log and the dry run (`2 GSM-7 segments`).
    pub fn note(mut self, note: impl Into<String>) -> Outgoing {
        self.note = Some(note.into());
        self
    }

    /// Ready to send.
    pub fn send(self) -> Prepared {
        Prepared::Send(self)
    }
}

impl HttpResponse {
    /// A response with `status` and `body` and no headers: what a plugin's
    /// own tests hand to `classify`.
    pub fn new(status: u16, body: impl AsRef<[u8]>) -> HttpResponse {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: body.as_ref().to_vec(),
        }
    }

    /// One more header (names arrive lower-case from the host).
    pub fn header(mut self, name: &str, value: &str) -> HttpResponse {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }
}

impl SmtpReply {
    /// An SMTP server's final reply.
    pub fn new(code: u16, message: &str) -> SmtpReply {
        SmtpReply {
            code,
            message: message.into(),
        }
    }
}

impl From<Email> for Message {
    fn from(e: Email) -> Message {
        Message::Email(e)
    }
}

impl From<HttpRequest> for Message {
    fn from(r: HttpRequest) -> Message {
        Message::Http(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_what_they_are_not_told() {
        let d = ChannelDescriptor::new("hook", "1.0.0", "a webhook", Target::Recipient)
            .answer_headers(&["retry-after"])
            .suppression_list("sms");
        assert_eq!(d.answer_headers, Some(vec!["retry-after".to_string()]));
        assert_eq!(d.suppression_list.as_deref(), Some("sms"));
        let a = ActivityDescriptor::new("join", "1.0.0", "joins").inputs(2, 8);
        assert_eq!((a.min_inputs, a.max_inputs), (2, 8));
        let r = HttpRequest::new("hook", "POST", "/v1/send", "+15550001111")
            .header("content-type", "application/json")
            .body(b"{}".to_vec());
        assert_eq!(r.headers.len(), 1);
        assert_eq!(r.body, b"{}");
        let e = Email::new("smtp", "a@x.example", "b@y.example", "Hi", "Hello")
            .html("<p>Hello</p>")
            .header("X-Campaign", "spring");
        assert_eq!(e.html.as_deref(), Some("<p>Hello</p>"));
        match Outgoing::new(e.into()).parts(2).note("two").send() {
            Prepared::Send(o) => assert_eq!((o.parts, o.note.as_deref()), (2, Some("two"))),
            Prepared::Exclude(_) => panic!("not sent"),
        }
    }
}
