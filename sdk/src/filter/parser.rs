//! Recursive-descent parser for filters.

use super::ast::{CmpOp, Expr, Literal, TextOp, TimeBase, TimeExpr};
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
        // A long filter is shown around the column, not whole.
        let chars: Vec<char> = src.chars().collect();
        let from = (column - 1).saturating_sub(SHOWN_AROUND);
        let to = (column - 1 + SHOWN_AROUND).min(chars.len());
        let mut source_line: String = chars[from..to].iter().collect();
        let mut offset = column - 1 - from;
        if from > 0 {
            source_line.insert(0, '…');
            offset += 1;
        }
        if to < chars.len() {
            source_line.push('…');
        }
        ParseError {
            column,
            message: message.to_string(),
            source_line,
            caret: format!("{}^", " ".repeat(offset)),
        }
    }
}

/// How many characters of a long filter an error shows on each side of the
/// column.
const SHOWN_AROUND: usize = 60;

/// Words that cannot start an attribute path.
const RESERVED: &[&str] = &["and", "or", "not", "true", "false"];

/// What may follow a path, for error messages.
const PREDICATES: &str = "`=`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `like`, `contains`, \
                          `starts with`, `is empty` or `is not empty`";

fn is_kw(tok: &Tok, kw: &str) -> bool {
    matches!(tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
}

/// How deep parentheses and `not` may nest. The parser and the evaluator
/// recurse once per level, and a plugin's stack is small: a deeper filter is
/// refused here, at its position, instead of trapping the plugin.
pub const MAX_NESTING: usize = 64;

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
    /// Each attribute path as written, with its byte offset.
    paths: Vec<(String, usize)>,
}

/// Parses, and returns each attribute path as written with its character
/// offset in `src`.
pub(crate) fn parse_located(src: &str) -> Result<(Expr, Vec<(String, usize)>), ParseError> {
    let toks = tokenize(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
        paths: Vec::new(),
    };
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
    let located = p
        .paths
        .into_iter()
        .map(|(path, byte)| (path, src[..byte.min(src.len())].chars().count()))
        .collect();
    Ok((expr, located))
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

    /// Consumes `tok` or explains what was expected instead.
    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), ParseError> {
        if self.peek() != &tok {
            let found = self.peek().describe();
            return Err(self.error(&format!("expected {what}, found {found}")));
        }
        self.next();
        Ok(())
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), ParseError> {
        if !is_kw(self.peek(), kw) {
            let found = self.peek().describe();
            return Err(self.error(&format!("expected `{kw}`, found {found}")));
        }
        self.next();
        Ok(())
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
            self.enter()?;
            self.next();
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    /// One level deeper, refused past [`MAX_NESTING`].
    fn enter(&mut self) -> Result<(), ParseError> {
        if self.depth == MAX_NESTING {
            return Err(self.error(&format!(
                "the filter nests `(` and `not` more than {MAX_NESTING} deep"
            )));
        }
        self.depth += 1;
        Ok(())
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        match self.peek().clone() {
            Tok::LParen => {
                self.enter()?;
                self.next();
                let e = self.or()?;
                self.expect(Tok::RParen, "`)`")?;
                self.depth -= 1;
                Ok(e)
            }
            Tok::Ident(name) if !RESERVED.iter().any(|k| name.eq_ignore_ascii_case(k)) => {
                if name.split('.').any(|part| part.is_empty()) {
                    return Err(self.error(&format!("`{name}` is not a valid attribute path")));
                }
                self.paths.push((name.clone(), self.toks[self.pos].0));
                self.next();
                self.predicate(name)
            }
            other => Err(self.error(&format!(
                "expected an attribute path, `not` or `(`, found {}",
                other.describe()
            ))),
        }
    }

    fn predicate(&mut self, path: String) -> Result<Expr, ParseError> {
        let op = match self.peek() {
            Tok::Eq => Some(CmpOp::Eq),
            Tok::Ne => Some(CmpOp::Ne),
            Tok::Lt => Some(CmpOp::Lt),
            Tok::Le => Some(CmpOp::Le),
            Tok::Gt => Some(CmpOp::Gt),
            Tok::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.next();
            let at = self.pos;
            let value = self.value()?;
            if matches!(value, Literal::Bool(_)) && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                self.pos = at;
                return Err(self.error("true and false can only be compared with `=` or `!=`"));
            }
            return Ok(Expr::Compare { path, op, value });
        }
        if is_kw(self.peek(), "is") {
            self.next();
            let negated = is_kw(self.peek(), "not");
            if negated {
                self.next();
            }
            self.expect_kw("empty")?;
            return Ok(Expr::IsEmpty { path, negated });
        }
        let negated = is_kw(self.peek(), "not");
        if negated {
            self.next();
        }
        let tok = self.peek().clone();
        if is_kw(&tok, "in") {
            self.next();
            self.expect(Tok::LParen, "`(` opening the list of values")?;
            let mut values = vec![self.value()?];
            while self.peek() == &Tok::Comma {
                self.next();
                values.push(self.value()?);
            }
            self.expect(Tok::RParen, "`,` or `)` closing the list of values")?;
            return Ok(Expr::In {
                path,
                values,
                negated,
            });
        }
        let text_op: Option<fn(String) -> TextOp> = if is_kw(&tok, "like") {
            Some(TextOp::Like)
        } else if is_kw(&tok, "contains") {
            Some(TextOp::Contains)
        } else if is_kw(&tok, "starts") {
            self.next();
            if !is_kw(self.peek(), "with") {
                let found = self.peek().describe();
                return Err(self.error(&format!("expected `with` after `starts`, found {found}")));
            }
            Some(TextOp::StartsWith)
        } else {
            None
        };
        let Some(make) = text_op else {
            let found = tok.describe();
            let after = if negated {
                "`in`, `like`, `contains` or `starts with` after `not`".to_string()
            } else {
                format!("{PREDICATES} after `{path}`")
            };
            return Err(self.error(&format!("expected {after}, found {found}")));
        };
        self.next();
        let at = self.pos;
        match self.next() {
            Tok::Text(s) => Ok(Expr::Text {
                path,
                op: make(s),
                negated,
            }),
            other => {
                self.pos = at;
                Err(self.error(&format!(
                    "expected a quoted text to match, found {}",
                    other.describe()
                )))
            }
        }
    }

    fn value(&mut self) -> Result<Literal, ParseError> {
        let tok = self.peek().clone();
        let value = match tok {
            Tok::Text(s) => {
                self.next();
                Literal::Text(s)
            }
            Tok::Number(n) => {
                self.next();
                if self.peek() == &Tok::Minus {
                    return Err(self.error(
                        "a date is written date('2026-01-05'); a number cannot be followed by `-`",
                    ));
                }
                Literal::Number(n)
            }
            Tok::Minus => {
                self.next();
                let at = self.pos;
                match self.next() {
                    Tok::Number(n) => Literal::Number(-n),
                    _ => {
                        self.pos = at;
                        let found = self.peek().describe();
                        return Err(
                            self.error(&format!("expected a number after `-`, found {found}"))
                        );
                    }
                }
            }
            ref t if is_kw(t, "true") => {
                self.next();
                Literal::Bool(true)
            }
            ref t if is_kw(t, "false") => {
                self.next();
                Literal::Bool(false)
            }
            ref t if is_kw(t, "now") || is_kw(t, "today") || is_kw(t, "date") => {
                Literal::Time(self.time()?)
            }
            other => {
                return Err(self.error(&format!(
                    "expected a value ('text', a number, true, false, now(), today() or \
                     date('2026-01-05')), found {}",
                    other.describe()
                )));
            }
        };
        Ok(value)
    }

    fn time(&mut self) -> Result<TimeExpr, ParseError> {
        let Tok::Ident(name) = self.next() else {
            unreachable!("time() is called on a function name")
        };
        self.expect(Tok::LParen, &format!("`(` after `{name}`"))?;
        let base = if name.eq_ignore_ascii_case("date") {
            let at = self.pos;
            match self.next() {
                Tok::Text(s) => match super::time::parse(&s) {
                    Some(t) => TimeBase::At(t),
                    None => {
                        self.pos = at;
                        return Err(self.error(&format!(
                            "'{s}' is not a date: write 2026-01-05 or 2026-01-05T10:30:00Z"
                        )));
                    }
                },
                other => {
                    self.pos = at;
                    return Err(self.error(&format!(
                        "expected a quoted date such as '2026-01-05', found {}",
                        other.describe()
                    )));
                }
            }
        } else if name.eq_ignore_ascii_case("now") {
            TimeBase::Now
        } else {
            TimeBase::Today
        };
        self.expect(Tok::RParen, "`)`")?;
        let mut offset_ms: i64 = 0;
        while matches!(self.peek(), Tok::Plus | Tok::Minus) {
            let sign = if self.next() == Tok::Plus { 1 } else { -1 };
            let at = self.pos;
            match self.next() {
                Tok::Duration(ms) => offset_ms = offset_ms.saturating_add(sign * ms),
                other => {
                    self.pos = at;
                    return Err(self.error(&format!(
                        "expected a duration such as 30d, 12h or 15m, found {}",
                        other.describe()
                    )));
                }
            }
        }
        Ok(TimeExpr { base, offset_ms })
    }
}
