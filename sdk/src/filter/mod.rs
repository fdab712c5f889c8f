//! The filter language shared by Query, Split and any custom activity.
//!
//! A filter is parsed once ([`Filter::parse`]) and evaluated a column at a
//! time over a batch of records ([`Filter::evaluate`]): the plugin asks the
//! host for the columns named by [`Filter::fields`] and gets one boolean per
//! record. Evaluating whole columns keeps the per-record cost to a tight loop
//! and lets the host serve attributes in batches.
//!
//! Grammar (keywords are case-insensitive; `docs/filters.md` has examples):
//! ```text
//! expr       := or
//! or         := and ("or" and)*
//! and        := unary ("and" unary)*
//! unary      := "not" unary | primary
//! primary    := "(" expr ")" | path predicate
//! predicate  := ("=" | "!=" | "<>" | "<" | "<=" | ">" | ">=") value
//!             | "is" ["not"] "empty"
//!             | ["not"] "in" "(" value ("," value)* ")"
//!             | ["not"] ("like" | "contains" | "starts" "with") text
//! path       := ident ("." ident)*
//! value      := text | ["-"] number | "true" | "false" | time
//! time       := ("now" "(" ")" | "today" "(" ")" | "date" "(" text ")")
//!               (("+" | "-") duration)*
//! duration   := number ("ms" | "s" | "m" | "h" | "d" | "w")
//! ```
//! A comparison with an empty (absent) value is false, whatever the operator,
//! as in SQL; test for absence with `is empty`.

mod ast;
mod eval;
mod lexer;
mod like;
mod parser;
pub mod time;

pub use ast::{CmpOp, Expr, Literal, TextOp, TimeBase, TimeExpr};
pub use eval::{Column, Columns, EvalError, Scalar};
pub use like::Pattern;
pub use parser::{MAX_NESTING, ParseError};

/// An attribute a filter reads, and whether it needs the values or only
/// whether each record has one (`is empty`), which is cheaper to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The attribute path (`recipient.email`).
    pub path: String,
    /// True when only presence is needed.
    pub presence_only: bool,
}

/// Merges field lists: each path once, presence-only when every use is.
pub fn merge_fields<'a>(lists: impl IntoIterator<Item = &'a [Field]>) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    for list in lists {
        for f in list {
            match out.iter_mut().find(|o| o.path == f.path) {
                Some(o) => o.presence_only &= f.presence_only,
                None => out.push(f.clone()),
            }
        }
    }
    out
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    source: String,
    expr: Expr,
    fields: Vec<Field>,
    locations: Vec<(String, usize)>,
}

impl Filter {
    /// Parses a filter; the error points at the offending column.
    pub fn parse(source: &str) -> Result<Filter, ParseError> {
        let (expr, locations) = parser::parse_located(source)?;
        let mut found = Vec::new();
        expr.collect_fields(&mut found);
        let fields = found
            .into_iter()
            .map(|(path, values)| Field {
                path,
                presence_only: !values,
            })
            .collect();
        Ok(Filter {
            source: source.to_string(),
            expr,
            fields,
            locations,
        })
    }

    /// The filter as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Each attribute path as written, with its character offset in the
    /// filter, in order (a path read twice is listed twice).
    pub fn locations(&self) -> &[(String, usize)] {
        &self.locations
    }

    /// The syntax tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The attribute paths the filter reads, each once, in order of appearance.
    pub fn paths(&self) -> Vec<String> {
        self.fields.iter().map(|f| f.path.clone()).collect()
    }

    /// The attributes the filter reads, each once, with the form it needs.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Evaluates the filter over a batch of `len` records whose columns are in
    /// `columns` (every path of [`Filter::fields`] must be present); `now_ms`
    /// is the run's clock, for `now()` and `today()`.
    pub fn evaluate(
        &self,
        columns: &Columns,
        len: usize,
        now_ms: i64,
    ) -> Result<Vec<bool>, EvalError> {
        eval::evaluate(&self.expr, columns, len, now_ms)
    }
}
