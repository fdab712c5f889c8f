//! Splits a filter into tokens, each with its byte offset.

use super::parser::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Text(String),
    Number(f64),
    /// A duration such as `30d`, in milliseconds.
    Duration(i64),
    LParen,
    RParen,
    Comma,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    End,
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Text(s) => format!("the text '{s}'"),
            Tok::Number(n) => format!("the number {n}"),
            Tok::Duration(ms) => format!("a duration of {ms} ms"),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Eq => "`=`".into(),
            Tok::Ne => "`!=`".into(),
            Tok::Lt => "`<`".into(),
            Tok::Le => "`<=`".into(),
            Tok::Gt => "`>`".into(),
            Tok::Ge => "`>=`".into(),
            Tok::Plus => "`+`".into(),
            Tok::Minus => "`-`".into(),
            Tok::End => "the end of the filter".into(),
        }
    }
}

/// Milliseconds per duration unit.
fn unit_ms(unit: &str) -> Option<i64> {
    Some(match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    })
}

pub(crate) fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let mut out = Vec::new();
    let mut chars = src.char_indices().peekable();
    while let Some(&(pos, c)) = chars.peek() {
        let single = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            ',' => Some(Tok::Comma),
            '=' => Some(Tok::Eq),
            '+' => Some(Tok::Plus),
            '-' => Some(Tok::Minus),
            _ => None,
        };
        if let Some(tok) = single {
            chars.next();
            out.push((pos, tok));
            continue;
        }
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '!' | '<' | '>' => {
                chars.next();
                let next = chars.peek().map(|&(_, d)| d);
                let tok = match (c, next) {
                    ('!', Some('=')) | ('<', Some('>')) => Tok::Ne,
                    ('<', Some('=')) => Tok::Le,
                    ('>', Some('=')) => Tok::Ge,
                    ('<', _) => Tok::Lt,
                    ('>', _) => Tok::Gt,
                    _ => return Err(ParseError::new(src, pos, "expected `!=`")),
                };
                if matches!(tok, Tok::Ne | Tok::Le | Tok::Ge) {
                    chars.next();
                }
                out.push((pos, tok));
            }
            '\'' | '"' => {
                chars.next();
                let mut text = String::new();
                let mut closed = false;
                while let Some((_, d)) = chars.next() {
                    if d == c {
                        // A doubled quote stands for one quote character.
                        if chars.peek().map(|&(_, e)| e) == Some(c) {
                            chars.next();
                            text.push(c);
                            continue;
                        }
                        closed = true;
                        break;
                    }
                    text.push(d);
                }
                if !closed {
                    return Err(ParseError::new(
                        src,
                        pos,
                        "unterminated text: add the closing quote",
                    ));
                }
                out.push((pos, Tok::Text(text)));
            }
            c if c.is_ascii_digit() => {
                let mut end = pos;
                while let Some(&(p, d)) = chars.peek() {
                    if d.is_ascii_digit() || d == '.' {
                        chars.next();
                        end = p + 1;
                    } else {
                        break;
                    }
                }
                let number = &src[pos..end];
                let unit_start = end;
                while let Some(&(p, d)) = chars.peek() {
                    if d.is_ascii_alphabetic() {
                        chars.next();
                        end = p + 1;
                    } else {
                        break;
                    }
                }
                let unit = &src[unit_start..end];
                let n: f64 = number.parse().map_err(|_| {
                    ParseError::new(src, pos, &format!("`{number}` is not a number"))
                })?;
                if unit.is_empty() {
                    out.push((pos, Tok::Number(n)));
                } else {
                    let Some(ms) = unit_ms(unit) else {
                        return Err(ParseError::new(
                            src,
                            unit_start,
                            &format!(
                                "`{unit}` is not a duration unit (expected ms, s, m, h, d or w, as in 30d)"
                            ),
                        ));
                    };
                    out.push((pos, Tok::Duration((n * ms as f64).round() as i64)));
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut end = pos;
                while let Some(&(p, d)) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' || d == '.' {
                        chars.next();
                        end = p + d.len_utf8();
                    } else {
                        break;
                    }
                }
                out.push((pos, Tok::Ident(src[pos..end].to_string())));
            }
            other => {
                return Err(ParseError::new(
                    src,
                    pos,
                    &format!("unexpected character `{other}`"),
                ));
            }
        }
    }
    out.push((src.len(), Tok::End));
    Ok(out)
}
