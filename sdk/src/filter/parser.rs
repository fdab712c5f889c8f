//! Recursive-descent parser for filters.

use super::ast::{CmpOp, Expr, Literal};
use super::lexer::{Tok, tokenize};

/// A filter that does not parse: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}\n  {source_line}\n  {caret}")]
pub struct ParseError {
    /// 1-based character column of the problem.
    pub column: usize,
    /// What is wrong or what was expected.
    pub message: String,
    source_line: String,
    caret: String,
}

impl ParseError {
    pub(crate) fn new(src: &str, byte_pos: usize, message: &str) -> ParseError {
        let column = src[..byte_pos.min(src.len())].chars().count() + 1;
        ParseError {
            column,
            message: message.to_string(),
            source_line: src.to_string(),
            caret: format!("{}^", " ".repeat(column - 1)),
        }
    }
}

const KEYWORDS: &[&str] = &["and", "or", "not", "is", "empty", "true", "false"];

fn is_kw(tok: &Tok, kw: &str) -> bool {
    matches!(tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(usize, Tok)>,
    pos: usize,
}

pub(crate) fn parse(src: &str) -> Result<Expr, ParseError> {
    let toks = tokenize(src)?;
    let mut p = Parser { src, toks, pos: 0 };
    if p.peek() == &Tok::End {
        return Err(p.error("expected a condition, found an empty filter"));
    }
    let expr = p.or()?;
    if p.peek() != &Tok::End {
        let found = p.peek().describe();
        return Err(p.error(&format!(
            "expected `and`, `or` or the end of the filter, found {found}"
        )));
    }
    Ok(expr)
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].1
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].1.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn error(&self, message: &str) -> ParseError {
        ParseError::new(self.src, self.toks[self.pos].0, message)
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut xs = vec![self.and()?];
        while is_kw(self.peek(), "or") {
            self.next();
            xs.push(self.and()?);
        }
        Ok(if xs.len() == 1 {
            xs.pop().unwrap()
        } else {
            Expr::Or(xs)
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut xs = vec![self.unary()?];
        while is_kw(self.peek(), "and") {
            self.next();
            xs.push(self.unary()?);
        }
        Ok(if xs.len() == 1 {
            xs.pop().unwrap()
        } else {
            Expr::And(xs)
        })
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if is_kw(self.peek(), "not") {
            self.next();
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        match self.peek().clone() {
            Tok::LParen => {
                self.next();
                let e = self.or()?;
                if self.peek() != &Tok::RParen {
                    let found = self.peek().describe();
                    return Err(self.error(&format!("expected `)`, found {found}")));
                }
                self.next();
                Ok(e)
            }
            Tok::Ident(name) if !KEYWORDS.iter().any(|k| name.eq_ignore_ascii_case(k)) => {
                self.check_path(&name)?;
                self.next();
                self.after_path(name)
            }
            other => Err(self.error(&format!(
                "expected an attribute path, `not` or `(`, found {}",
                other.describe()
            ))),
        }
    }

    fn check_path(&self, name: &str) -> Result<(), ParseError> {
        if name.split('.').any(|part| part.is_empty()) {
            return Err(self.error(&format!("`{name}` is not a valid attribute path")));
        }
        Ok(())
    }

    fn after_path(&mut self, path: String) -> Result<Expr, ParseError> {
        let op = match self.peek() {
            Tok::Eq => CmpOp::Eq,
            Tok::Ne => CmpOp::Ne,
            t if is_kw(t, "is") => {
                self.next();
                let negated = if is_kw(self.peek(), "not") {
                    self.next();
                    true
                } else {
                    false
                };
                if !is_kw(self.peek(), "empty") {
                    let found = self.peek().describe();
                    return Err(self.error(&format!("expected `empty`, found {found}")));
                }
                self.next();
                return Ok(Expr::IsEmpty { path, negated });
            }
            other => {
                let found = other.describe();
                return Err(self.error(&format!(
                    "expected `=`, `!=`, `is empty` or `is not empty` after `{path}`, found {found}"
                )));
            }
        };
        self.next();
        let value = match self.peek().clone() {
            Tok::Text(s) => Literal::Text(s),
            Tok::Number(n) => Literal::Number(n),
            t if is_kw(&t, "true") => Literal::Bool(true),
            t if is_kw(&t, "false") => Literal::Bool(false),
            other => {
                return Err(self.error(&format!(
                    "expected a value ('text', a number, true or false), found {}",
                    other.describe()
                )));
            }
        };
        self.next();
        Ok(Expr::Compare { path, op, value })
    }
}
