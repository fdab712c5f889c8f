//! Column-at-a-time evaluation of a filter over a batch of records.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::ast::{CmpOp, Expr, Literal, TextOp};
use super::like::Pattern;

/// The values of one attribute for a batch of records (`None`: empty).
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Text values.
    Text(Vec<Option<String>>),
    /// Whole numbers.
    Integer(Vec<Option<i64>>),
    /// Decimal numbers.
    Float(Vec<Option<f64>>),
    /// Booleans.
    Boolean(Vec<Option<bool>>),
    /// Instants, in milliseconds since the Unix epoch.
    Timestamp(Vec<Option<i64>>),
    /// Text with few distinct values: row `i` is `values[rows[i]]`.
    Dictionary {
        /// The distinct values.
        values: Vec<String>,
        /// An index into `values` per row.
        rows: Vec<Option<u32>>,
    },
    /// Only whether each row holds a value.
    Presence(Vec<bool>),
}

/// One value of a column, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    /// Text.
    Text(&'a str),
    /// A whole number.
    Integer(i64),
    /// A decimal number.
    Float(f64),
    /// A boolean.
    Boolean(bool),
    /// An instant in milliseconds.
    Timestamp(i64),
}

impl Scalar<'_> {
    /// The value as text.
    pub fn to_text(&self) -> String {
        match self {
            Scalar::Text(s) => s.to_string(),
            Scalar::Integer(n) | Scalar::Timestamp(n) => n.to_string(),
            Scalar::Float(n) => n.to_string(),
            Scalar::Boolean(b) => b.to_string(),
        }
    }
}

impl Column {
    /// How many values the column holds.
    pub fn len(&self) -> usize {
        match self {
            Column::Text(v) => v.len(),
            Column::Integer(v) | Column::Timestamp(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Boolean(v) => v.len(),
            Column::Dictionary { rows, .. } => rows.len(),
            Column::Presence(v) => v.len(),
        }
    }

    /// True when the column holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`, if present (empty text counts as absent). A presence-only
    /// column has no values to give.
    pub fn get(&self, i: usize) -> Option<Scalar<'_>> {
        match self {
            Column::Text(v) => v[i].as_deref().filter(|s| !s.is_empty()).map(Scalar::Text),
            Column::Integer(v) => v[i].map(Scalar::Integer),
            Column::Timestamp(v) => v[i].map(Scalar::Timestamp),
            Column::Float(v) => v[i].map(Scalar::Float),
            Column::Boolean(v) => v[i].map(Scalar::Boolean),
            Column::Dictionary { values, rows } => rows[i]
                .and_then(|k| values.get(k as usize))
                .filter(|s| !s.is_empty())
                .map(|s| Scalar::Text(s)),
            Column::Presence(_) => None,
        }
    }

    /// Whether row `i` holds a value (empty text counts as absent).
    pub fn is_present(&self, i: usize) -> bool {
        match self {
            Column::Presence(v) => v[i],
            _ => self.get(i).is_some(),
        }
    }

    /// Row `i` as text, if present.
    pub fn text(&self, i: usize) -> Option<String> {
        self.get(i).map(|s| s.to_text())
    }

    /// Applies `f` to every present value; absent rows give `false`. A
    /// dictionary column calls `f` once per distinct value.
    fn test_rows(&self, f: impl Fn(Scalar<'_>) -> bool) -> Vec<bool> {
        match self {
            Column::Dictionary { values, rows } => {
                let per_value: Vec<bool> = values
                    .iter()
                    .map(|v| !v.is_empty() && f(Scalar::Text(v)))
                    .collect();
                rows.iter()
                    .map(|r| r.and_then(|k| per_value.get(k as usize).copied()) == Some(true))
                    .collect()
            }
            Column::Text(v) => v
                .iter()
                .map(|x| match x.as_deref() {
                    Some(s) if !s.is_empty() => f(Scalar::Text(s)),
                    _ => false,
                })
                .collect(),
            _ => (0..self.len())
                .map(|i| self.get(i).is_some_and(&f))
                .collect(),
        }
    }
}

/// Columns of a batch, by attribute path.
pub type Columns = HashMap<String, Column>;

/// A filter that cannot be evaluated on the columns given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// A path of the filter has no column.
    #[error("no column for `{0}`")]
    MissingColumn(String),
    /// A column is shorter or longer than the batch.
    #[error("column `{path}` has {got} values for a batch of {want}")]
    Length {
        /// The path.
        path: String,
        /// Its length.
        got: usize,
        /// The batch length.
        want: usize,
    },
    /// A column was fetched as presence only, but the filter compares values.
    #[error("column `{0}` was fetched without its values (presence only)")]
    PresenceOnly(String),
}

/// A literal resolved for one evaluation, with its forms precomputed so a
/// text column can be compared as numbers, booleans or instants.
struct Resolved<'a> {
    lit: &'a Literal,
    number: Option<f64>,
    boolean: Option<bool>,
    time: Option<i64>,
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

impl<'a> Resolved<'a> {
    fn new(lit: &'a Literal, now_ms: i64) -> Resolved<'a> {
        let (number, boolean, time) = match lit {
            Literal::Text(s) => (
                s.trim().parse().ok(),
                parse_bool(s.trim()),
                super::time::parse(s),
            ),
            Literal::Number(n) => (Some(*n), None, None),
            Literal::Bool(b) => (None, Some(*b), None),
            Literal::Time(t) => (None, None, Some(t.resolve(now_ms))),
        };
        Resolved {
            lit,
            number,
            boolean,
            time,
        }
    }

    /// How a value orders against the literal; `None` when they cannot be
    /// compared (then every operator is false).
    fn compare(&self, v: Scalar<'_>) -> Option<Ordering> {
        match v {
            Scalar::Text(s) => match self.lit {
                Literal::Text(l) => Some(s.cmp(l.as_str())),
                Literal::Number(n) => s.trim().parse::<f64>().ok()?.partial_cmp(n),
                Literal::Bool(b) => parse_bool(s.trim()).map(|x| x.cmp(b)),
                Literal::Time(_) => Some(super::time::parse(s)?.cmp(&self.time?)),
            },
            Scalar::Integer(n) => (n as f64).partial_cmp(&self.number?),
            Scalar::Float(n) => n.partial_cmp(&self.number?),
            Scalar::Boolean(b) => Some(b.cmp(&self.boolean?)),
            Scalar::Timestamp(t) => Some(t.cmp(&self.time?)),
        }
    }
}

pub(crate) fn evaluate(
    expr: &Expr,
    columns: &Columns,
    len: usize,
    now_ms: i64,
) -> Result<Vec<bool>, EvalError> {
    match expr {
        Expr::And(xs) => {
            let mut acc = evaluate(&xs[0], columns, len, now_ms)?;
            for x in &xs[1..] {
                let v = evaluate(x, columns, len, now_ms)?;
                acc.iter_mut().zip(v).for_each(|(a, b)| *a &= b);
            }
            Ok(acc)
        }
        Expr::Or(xs) => {
            let mut acc = evaluate(&xs[0], columns, len, now_ms)?;
            for x in &xs[1..] {
                let v = evaluate(x, columns, len, now_ms)?;
                acc.iter_mut().zip(v).for_each(|(a, b)| *a |= b);
            }
            Ok(acc)
        }
        Expr::Not(x) => Ok(evaluate(x, columns, len, now_ms)?
            .into_iter()
            .map(|b| !b)
            .collect()),
        Expr::IsEmpty { path, negated } => {
            let col = column(columns, path, len)?;
            Ok((0..len).map(|i| col.is_present(i) == *negated).collect())
        }
        Expr::Compare { path, op, value } => {
            let col = values(columns, path, len)?;
            let lit = Resolved::new(value, now_ms);
            // Values that cannot be compared with the literal (the text `x`
            // with the number 10) are unequal and unordered.
            Ok(col.test_rows(|v| match lit.compare(v) {
                Some(o) => op.holds(o),
                None => *op == CmpOp::Ne,
            }))
        }
        Expr::In {
            path,
            values: list,
            negated,
        } => {
            let col = values(columns, path, len)?;
            let lits: Vec<Resolved> = list.iter().map(|l| Resolved::new(l, now_ms)).collect();
            Ok(col.test_rows(|v| {
                lits.iter().any(|l| l.compare(v) == Some(Ordering::Equal)) != *negated
            }))
        }
        Expr::Text { path, op, negated } => {
            let col = values(columns, path, len)?;
            let test: Box<dyn Fn(&str) -> bool> = match op {
                TextOp::StartsWith(p) => Box::new(move |s: &str| s.starts_with(p.as_str())),
                TextOp::Contains(p) => Box::new(move |s: &str| s.contains(p.as_str())),
                TextOp::Like(p) => {
                    let pattern = Pattern::new(p);
                    Box::new(move |s: &str| pattern.matches(s))
                }
            };
            Ok(col.test_rows(|v| {
                let hit = match v {
                    Scalar::Text(s) => test(s),
                    other => test(&other.to_text()),
                };
                hit != *negated
            }))
        }
    }
}

fn column<'a>(columns: &'a Columns, path: &str, len: usize) -> Result<&'a Column, EvalError> {
    let col = columns
        .get(path)
        .ok_or_else(|| EvalError::MissingColumn(path.to_string()))?;
    if col.len() != len {
        return Err(EvalError::Length {
            path: path.to_string(),
            got: col.len(),
            want: len,
        });
    }
    Ok(col)
}

fn values<'a>(columns: &'a Columns, path: &str, len: usize) -> Result<&'a Column, EvalError> {
    let col = column(columns, path, len)?;
    if matches!(col, Column::Presence(_)) {
        return Err(EvalError::PresenceOnly(path.to_string()));
    }
    Ok(col)
}
