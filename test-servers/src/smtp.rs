//! An SMTP sink (RFC 5321 server side, no relaying): accepts every message,
//! answers `250 ... queued as ID`, and records the envelope and content.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// `MAIL FROM` address.
    pub from: String,
    /// `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The message, headers and body, dot-unstuffed.
    pub data: String,
    /// The id given in the reply.
    pub queue_id: String,
    /// Whether the session was encrypted (STARTTLS or implicit TLS).
    pub tls: bool,
    /// The user the session authenticated as (`AUTH PLAIN` or `LOGIN`).
    pub user: Option<String>,
    /// Whether the client pipelined the transaction's commands (RFC 2920):
    /// MAIL, RCPT and DATA came in one read and got one reply write.
    pub pipelined: bool,
}

impl ReceivedMail {
    /// A header's value (first occurrence, unfolded), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with(' ') || line.starts_with('\t') {
                    v.push_str(line.trim_start_matches(['\t']));
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_string());
            }
        }
        value
    }

    /// The decoded Subject (RFC 2047 encoded words resolved).
    pub fn subject(&self) -> Option<String> {
        let parsed = mail_parser::MessageParser::default().parse(self.data.as_bytes())?;
        parsed.subject().map(str::to_string)
    }

    /// The decoded plain-text body.
    pub fn text(&self) -> Option<String> {
        let parsed = mail_parser::MessageParser::default().parse(self.data.as_bytes())?;
        parsed.body_text(0).map(|t| t.into_owned())
    }

    /// The body (everything after the header).
    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("")
    }
}

/// A running SMTP sink.
#[derive(Clone)]
pub struct SmtpSink {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

/// How a sink behaves.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Pause between accepting a message's data and replying to it: a slow
    /// server, which keeps messages in flight. An accepted message is
    /// recorded before the pause, as a relay that has it but has not said
    /// so yet.
    pub reply_delay: std::time::Duration,
    /// Where the sink stops answering, if it does: a relay that hangs.
    pub stall: Option<Stall>,
    /// Faults to inject.
    pub faults: Faults,
    /// Offer STARTTLS with this server config (`Security::StartTls`), or
    /// speak TLS from the first byte (`Security::Implicit`).
    pub security: Security,
    /// Require `AUTH` (PLAIN or LOGIN) with this user and password before
    /// `MAIL`; AUTH is only offered once the session is encrypted.
    pub auth: Option<(String, String)>,
}

/// Where a stalling relay stops answering (it keeps the connection open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// It accepts the connection and never greets.
    Greeting,
    /// It takes the message's data and never replies to the final dot.
    Data,
}

/// How a sink protects its sessions.
#[derive(Clone, Default)]
pub enum Security {
    /// Plain text only.
    #[default]
    None,
    /// Plain text, upgraded by `STARTTLS` (RFC 3207); mail is refused
    /// before the upgrade.
    StartTls(Arc<rustls::ServerConfig>),
    /// TLS from the first byte (RFC 8314, `smtps://`).
    Implicit(Arc<rustls::ServerConfig>),
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Security::None => "None",
            Security::StartTls(_) => "StartTls",
            Security::Implicit(_) => "Implicit",
        })
    }
}

/// A final reply to a message's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The SMTP code (`451`, `550`...).
    pub code: u16,
    /// The text after the code.
    pub text: String,
}

impl Reply {
    /// A reply with this code and text.
    pub fn new(code: u16, text: &str) -> Reply {
        Reply {
            code,
            text: text.to_string(),
        }
    }
}

/// Faults a sink injects, deterministically, so tests can assert on them.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Replies scripted per recipient address: the n-th message to the
    /// address gets the n-th reply; past the script, the message is accepted.
    pub per_address: std::collections::HashMap<String, Vec<Reply>>,
    /// Every n-th message (counted over the sink's life) gets this reply
    /// instead of being accepted: `(10, 451 ...)` is a 10% transient fault rate.
    pub every_nth: Option<(u64, Reply)>,
    /// Every n-th message has its connection dropped after the data, with no
    /// reply at all.
    pub drop_every_nth: Option<u64>,
    /// Close each connection, without a word, after answering this many
    /// messages on it: a relay limiting messages per connection, seen by the
    /// client only when it next uses the connection.
    pub messages_per_connection: Option<u64>,
}

/// One message's data as answered, accepted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The code replied (`None`: the connection was dropped).
    pub code: Option<u16>,
    /// The message's `Message-ID` header, if it has one.
    pub message_id: Option<String>,
}

/// The sink's shared state: what it received and how it answered.
#[derive(Debug, Default)]
struct State {
    received: Vec<ReceivedMail>,
    attempts: Vec<Attempt>,
    per_address: std::collections::HashMap<String, usize>,
}

/// What the sink does with one message's data.
enum Answer {
    Accept,
    Reply(Reply),
    Drop,
}

impl Faults {
    /// Decides the fate of the `n`-th message (1-based) to `to`.
    fn answer(&self, n: u64, to: &[String], state: &mut State) -> Answer {
        for address in to {
            if let Some(script) = self.per_address.get(address) {
                let i = state.per_address.entry(address.clone()).or_default();
                *i += 1;
                if let Some(reply) = script.get(*i - 1) {
                    return Answer::Reply(reply.clone());
                }
            }
        }
        if let Some(k) = self.drop_every_nth
            && k > 0
            && n.is_multiple_of(k)
        {
            return Answer::Drop;
        }
        match &self.every_nth {
            Some((k, reply)) if *k > 0 && n.is_multiple_of(*k) => Answer::Reply(reply.clone()),
            _ => Answer::Accept,
        }
    }
}

impl SmtpSink {
    /// Starts a sink on 127.0.0.1 on a free port, on the current tokio runtime.
    pub async fn start() -> std::io::Result<SmtpSink> {
        SmtpSink::start_with(SinkOptions::default()).await
    }

    /// Starts a sink with options.
    pub async fn start_with(options: SinkOptions) -> std::io::Result<SmtpSink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let sink = SmtpSink {
            addr,
            state: state.clone(),
        };
        let options = Arc::new(options);
        let messages = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(async move {
            let mut counter = 0u64;
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                counter += 1;
                let state = state.clone();
                let options = options.clone();
                let messages = messages.clone();
                let conn = counter;
                tokio::spawn(async move {
                    if let Err(e) = session(stream, state, conn, &options, &messages).await {
                        tracing::debug!("smtp sink session ended: {e}");
                    }
                });
            }
        });
        Ok(sink)
    }

    /// `smtp://127.0.0.1:PORT`, for an account URL.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Everything accepted so far.
    pub fn received(&self) -> Vec<ReceivedMail> {
        self.lock().received.clone()
    }

    /// How many messages were accepted so far (without copying them, as
    /// a benchmark counting hundreds of thousands needs).
    pub fn received_count(&self) -> usize {
        self.lock().received.len()
    }

    /// The `i`-th message accepted, if there is one.
    pub fn received_at(&self, i: usize) -> Option<ReceivedMail> {
        self.lock().received.get(i).cloned()
    }

    /// Every message's data as answered, faults included, in order.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.lock().attempts.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn session(
    stream: TcpStream,
    state: Arc<Mutex<State>>,
    conn: u64,
    options: &SinkOptions,
    messages: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()> {
    match &options.security {
        Security::Implicit(config) => {
            let tls = tokio_rustls::TlsAcceptor::from(config.clone())
                .accept(stream)
                .await?;
            let r = dialogue(BufReader::new(tls), true, state, conn, options, messages).await?;
            debug_assert!(r.is_none());
            Ok(())
        }
        Security::StartTls(config) => {
            let r = dialogue(
                BufReader::new(stream),
                false,
                state.clone(),
                conn,
                options,
                messages,
            )
            .await?;
            if let Some(plain) = r {
                // RFC 3207: after the upgrade the session starts over.
                let tls = tokio_rustls::TlsAcceptor::from(config.clone())
                    .accept(plain)
                    .await?;
                dialogue(BufReader::new(tls), true, state, conn, options, messages).await?;
            }
            Ok(())
        }
        Security::None => {
            dialogue(
                BufReader::new(stream),
                false,
                state,
                conn,
                options,
                messages,
            )
            .await?;
            Ok(())
        }
    }
}

fn b64(text: &str) -> Option<String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

/// One SMTP dialogue on `r`; returns the stream when the client asked for
/// STARTTLS (the caller upgrades it and starts a new dialogue).
async fn dialogue<S>(
    mut r: BufReader<S>,
    encrypted: bool,
    state: Arc<Mutex<State>>,
    conn: u64,
    options: &SinkOptions,
    messages: &std::sync::atomic::AtomicU64,
) -> std::io::Result<Option<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let starttls = matches!(options.security, Security::StartTls(_)) && !encrypted;
    if options.stall == Some(Stall::Greeting) {
        // Hold the connection open, say nothing, until the client leaves.
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut r, &mut sink).await;
        return Ok(None);
    }
    if !(encrypted && matches!(options.security, Security::StartTls(_))) {
        r.get_mut()
            .write_all(b"220 crosscast-sink ESMTP ready\r\n")
            .await?;
    }
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut user: Option<String> = None;
    let mut seq = 0u64;
    let mut answered_here = 0u64;
    let mut line = String::new();
    // Replies wait while more pipelined commands are buffered (RFC 2920):
    // a client sending MAIL, RCPT and DATA at once gets one write back.
    let mut pending: Vec<u8> = Vec::new();
    // Some reply of this transaction waited for the next pipelined command.
    let mut grouped = false;
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let cmd = line.trim_end_matches(['\r', '\n']).to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            let mut ext = String::from(
                "250-crosscast-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n",
            );
            if starttls {
                ext.push_str("250-STARTTLS\r\n");
            }
            if options.auth.is_some() && encrypted {
                ext.push_str("250-AUTH PLAIN LOGIN\r\n");
            }
            ext.push_str("250 SIZE 35882577\r\n");
            ext
        } else if upper.starts_with("HELO") {
            "250 crosscast-sink\r\n".into()
        } else if upper == "STARTTLS" && starttls {
            pending.extend_from_slice(b"220 2.0.0 Ready to start TLS\r\n");
            r.get_mut().write_all(&pending).await?;
            return Ok(Some(r.into_inner()));
        } else if upper.starts_with("AUTH ") && options.auth.is_some() && encrypted {
            let (want_user, want_pass) = options.auth.clone().unwrap_or_default();
            let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
            let creds = match args.first().map(|m| m.to_ascii_uppercase()).as_deref() {
                Some("PLAIN") => {
                    let payload = match args.get(1) {
                        Some(p) => p.to_string(),
                        None => {
                            pending.extend_from_slice(b"334 \r\n");
                            r.get_mut().write_all(&pending).await?;
                            pending.clear();
                            let mut l = String::new();
                            r.read_line(&mut l).await?;
                            l
                        }
                    };
                    b64(&payload).and_then(|p| {
                        let mut parts = p.split('\0').skip(1);
                        Some((parts.next()?.to_string(), parts.next()?.to_string()))
                    })
                }
                Some("LOGIN") => {
                    pending.extend_from_slice(b"334 VXNlcm5hbWU6\r\n");
                    r.get_mut().write_all(&pending).await?;
                    pending.clear();
                    let mut u = String::new();
                    r.read_line(&mut u).await?;
                    pending.extend_from_slice(b"334 UGFzc3dvcmQ6\r\n");
                    r.get_mut().write_all(&pending).await?;
                    pending.clear();
                    let mut p = String::new();
                    r.read_line(&mut p).await?;
                    b64(&u).zip(b64(&p))
                }
                _ => None,
            };
            match creds {
                Some((u, p)) if u == want_user && p == want_pass => {
                    user = Some(u);
                    "235 2.7.0 Authentication successful\r\n".into()
                }
                _ => "535 5.7.8 Authentication credentials invalid\r\n".into(),
            }
        } else if upper.starts_with("MAIL FROM:") {
            if starttls {
                "530 5.7.0 Must issue a STARTTLS command first\r\n".into()
            } else if options.auth.is_some() && user.is_none() {
                "530 5.7.0 Authentication required\r\n".into()
            } else {
                from = Some(angle(&cmd[10..]));
                to.clear();
                grouped = false;
                "250 2.1.0 Ok\r\n".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            if from.is_none() {
                "503 5.5.1 Error: need MAIL command\r\n".into()
            } else {
                to.push(angle(&cmd[8..]));
                "250 2.1.5 Ok\r\n".into()
            }
        } else if upper == "DATA" {
            if to.is_empty() {
                "503 5.5.1 Error: need RCPT command\r\n".into()
            } else {
                pending.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                r.get_mut().write_all(&pending).await?;
                pending.clear();
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l).await? == 0 {
                        return Ok(None);
                    }
                    if l == ".\r\n" || l == ".\n" {
                        break;
                    }
                    let l = l.strip_prefix('.').map(str::to_string).unwrap_or(l);
                    data.push_str(&l);
                }
                if options.stall == Some(Stall::Data) {
                    let mut sink = Vec::new();
                    let _ = tokio::io::AsyncReadExt::read_to_end(&mut r, &mut sink).await;
                    return Ok(None);
                }
                let n = messages.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let mut received = ReceivedMail {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                    queue_id: String::new(),
                    tls: encrypted,
                    user: user.clone(),
                    pipelined: grouped,
                };
                let answer = {
                    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                    let answer = options.faults.answer(n, &received.to, &mut st);
                    let code = match &answer {
                        Answer::Accept => Some(250),
                        Answer::Reply(r) => Some(r.code),
                        Answer::Drop => None,
                    };
                    st.attempts.push(Attempt {
                        to: received.to.clone(),
                        code,
                        message_id: received.header("Message-ID"),
                    });
                    // Accepted at the dot: recorded before the reply leaves.
                    if let Answer::Accept = answer {
                        seq += 1;
                        received.queue_id = format!("C{conn}M{seq}");
                        st.received.push(received.clone());
                    }
                    answer
                };
                if !options.reply_delay.is_zero() {
                    tokio::time::sleep(options.reply_delay).await;
                }
                match answer {
                    Answer::Drop => return Ok(None),
                    Answer::Reply(r) => format!("{} {}\r\n", r.code, r.text),
                    Answer::Accept => {
                        format!("250 2.0.0 Ok: queued as {}\r\n", received.queue_id)
                    }
                }
            }
        } else if upper == "RSET" {
            from = None;
            to.clear();
            "250 2.0.0 Ok\r\n".into()
        } else if upper == "NOOP" {
            "250 2.0.0 Ok\r\n".into()
        } else if upper == "QUIT" {
            pending.extend_from_slice(b"221 2.0.0 Bye\r\n");
            r.get_mut().write_all(&pending).await?;
            return Ok(None);
        } else {
            "502 5.5.2 Error: command not recognized\r\n".into()
        };
        pending.extend_from_slice(reply.as_bytes());
        if r.buffer().is_empty() {
            r.get_mut().write_all(&pending).await?;
            pending.clear();
        } else {
            grouped = true;
        }
        if upper == "DATA" {
            answered_here += 1;
            if options
                .faults
                .messages_per_connection
                .is_some_and(|n| answered_here >= n)
            {
                return Ok(None);
            }
        }
    }
}

/// The address inside `<...>`, without ESMTP parameters.
fn angle(s: &str) -> String {
    let s = s.trim();
    match (s.find('<'), s.find('>')) {
        (Some(a), Some(b)) if a < b => s[a + 1..b].to_string(),
        _ => s.split_whitespace().next().unwrap_or("").to_string(),
    }
}
