//! The filter language shared by Query, Split and any custom activity.
//!
//! A filter is parsed once ([`Filter::parse`]) and evaluated a column at a
//! time over a batch of records ([`Filter::evaluate`]): the plugin asks the
//! host for the columns named by [`Filter::paths`] and gets one boolean per
//! record. Evaluating whole columns keeps the per-record cost to a tight loop
//! and lets the host serve attributes in batches.
//!
//! Grammar (keywords are case-insensitive):
//! ```text
//! expr       := or
//! or         := and ("or" and)*
//! and        := unary ("and" unary)*
//! unary      := "not" unary | primary
//! primary    := "(" expr ")" | path "is" ["not"] "empty" | path op literal
//! op         := "=" | "!="
//! path       := ident ("." ident)*
//! literal    := 'text' | "text" | number | true | false
//! ```
//! A comparison with an empty (absent) value is false, whatever the operator,
//! as in SQL; test for absence with `is empty`.

mod ast;
mod eval;
mod lexer;
mod parser;

pub use ast::{CmpOp, Expr, Literal};
pub use eval::{Column, Columns, EvalError};
pub use parser::ParseError;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    source: String,
    expr: Expr,
}

impl Filter {
    /// Parses a filter; the error points at the offending column.
    pub fn parse(source: &str) -> Result<Filter, ParseError> {
        let expr = parser::parse(source)?;
        Ok(Filter {
            source: source.to_string(),
            expr,
        })
    }

    /// The filter as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The syntax tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The attribute paths the filter reads, each once, in order of appearance.
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.expr.collect_paths(&mut out);
        out
    }

    /// Evaluates the filter over a batch of `len` records whose columns are in
    /// `columns` (every path of [`Filter::paths`] must be present).
    pub fn evaluate(&self, columns: &Columns, len: usize) -> Result<Vec<bool>, EvalError> {
        eval::evaluate(&self.expr, columns, len)
    }
}
