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
    received: Arc<Mutex<Vec<ReceivedMail>>>,
}

/// How a sink behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkOptions {
    /// Pause between accepting a message's data and replying to it: a slow
    /// server, which keeps messages in flight.
    pub reply_delay: std::time::Duration,
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
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = SmtpSink {
            addr,
            received: received.clone(),
        };
        tokio::spawn(async move {
            let mut counter = 0u64;
            while let Ok((stream, _)) = listener.accept().await {
                counter += 1;
                let received = received.clone();
                let conn = counter;
                tokio::spawn(async move {
                    if let Err(e) = session(stream, received, conn, options).await {
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

    /// Everything received so far.
    pub fn received(&self) -> Vec<ReceivedMail> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn session(
    stream: TcpStream,
    received: Arc<Mutex<Vec<ReceivedMail>>>,
    conn: u64,
    options: SinkOptions,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 crosscast-sink ESMTP ready\r\n").await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut seq = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end_matches(['\r', '\n']);
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-crosscast-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 35882577\r\n".into()
        } else if upper.starts_with("HELO") {
            "250 crosscast-sink\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            from = Some(angle(&cmd[10..]));
            to.clear();
            "250 2.1.0 Ok\r\n".into()
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
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l).await? == 0 {
                        return Ok(());
                    }
                    if l == ".\r\n" || l == ".\n" {
                        break;
                    }
                    let l = l.strip_prefix('.').map(str::to_string).unwrap_or(l);
                    data.push_str(&l);
                }
                seq += 1;
                let queue_id = format!("C{conn}M{seq}");
                received
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(ReceivedMail {
                        from: from.take().unwrap_or_default(),
                        to: std::mem::take(&mut to),
                        data,
                        queue_id: queue_id.clone(),
                    });
                if !options.reply_delay.is_zero() {
                    tokio::time::sleep(options.reply_delay).await;
                }
                format!("250 2.0.0 Ok: queued as {queue_id}\r\n")
            }
        } else if upper == "RSET" {
            from = None;
            to.clear();
            "250 2.0.0 Ok\r\n".into()
        } else if upper == "NOOP" {
            "250 2.0.0 Ok\r\n".into()
        } else if upper == "QUIT" {
            w.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.2 Error: command not recognized\r\n".into()
        };
        w.write_all(reply.as_bytes()).await?;
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
