//! Splits a filter into tokens, each with its byte offset.

use super::parser::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Text(String),
    Number(f64),
    LParen,
    RParen,
    Eq,
    Ne,
    End,
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Text(s) => format!("the text '{s}'"),
            Tok::Number(n) => format!("the number {n}"),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Eq => "`=`".into(),
            Tok::Ne => "`!=`".into(),
            Tok::End => "the end of the filter".into(),
        }
    }
}

pub(crate) fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let mut out = Vec::new();
    let mut chars = src.char_indices().peekable();
    while let Some(&(pos, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push((pos, Tok::LParen));
            }
            ')' => {
                chars.next();
                out.push((pos, Tok::RParen));
            }
            '=' => {
                chars.next();
                out.push((pos, Tok::Eq));
            }
            '!' => {
                chars.next();
                match chars.next() {
                    Some((_, '=')) => out.push((pos, Tok::Ne)),
                    _ => return Err(ParseError::new(src, pos, "expected `!=`")),
                }
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
            c if c.is_ascii_digit() || c == '-' => {
                let mut end = pos;
                chars.next();
                end += c.len_utf8();
                while let Some(&(p, d)) = chars.peek() {
                    if d.is_ascii_digit() || d == '.' {
                        chars.next();
                        end = p + d.len_utf8();
                    } else {
                        break;
                    }
                }
                let text = &src[pos..end];
                let n: f64 = text
                    .parse()
                    .map_err(|_| ParseError::new(src, pos, &format!("`{text}` is not a number")))?;
                out.push((pos, Tok::Number(n)));
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
