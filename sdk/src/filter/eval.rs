//! Column-at-a-time evaluation of a filter over a batch of records.

use std::collections::HashMap;

use super::ast::{CmpOp, Expr, Literal};

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
}

impl Column {
    /// How many values the column holds.
    pub fn len(&self) -> usize {
        match self {
            Column::Text(v) => v.len(),
            Column::Integer(v) | Column::Timestamp(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Boolean(v) => v.len(),
        }
    }

    /// True when the column holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether row `i` holds a value (empty text counts as absent).
    pub fn is_present(&self, i: usize) -> bool {
        match self {
            Column::Text(v) => v[i].as_deref().is_some_and(|s| !s.is_empty()),
            Column::Integer(v) | Column::Timestamp(v) => v[i].is_some(),
            Column::Float(v) => v[i].is_some(),
            Column::Boolean(v) => v[i].is_some(),
        }
    }

    /// Row `i` as text, if present.
    pub fn text(&self, i: usize) -> Option<String> {
        match self {
            Column::Text(v) => v[i].clone().filter(|s| !s.is_empty()),
            Column::Integer(v) | Column::Timestamp(v) => v[i].map(|n| n.to_string()),
            Column::Float(v) => v[i].map(|n| n.to_string()),
            Column::Boolean(v) => v[i].map(|b| b.to_string()),
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
}

pub(crate) fn evaluate(expr: &Expr, columns: &Columns, len: usize) -> Result<Vec<bool>, EvalError> {
    match expr {
        Expr::And(xs) => {
            let mut acc = evaluate(&xs[0], columns, len)?;
            for x in &xs[1..] {
                let v = evaluate(x, columns, len)?;
                acc.iter_mut().zip(v).for_each(|(a, b)| *a &= b);
            }
            Ok(acc)
        }
        Expr::Or(xs) => {
            let mut acc = evaluate(&xs[0], columns, len)?;
            for x in &xs[1..] {
                let v = evaluate(x, columns, len)?;
                acc.iter_mut().zip(v).for_each(|(a, b)| *a |= b);
            }
            Ok(acc)
        }
        Expr::Not(x) => Ok(evaluate(x, columns, len)?.into_iter().map(|b| !b).collect()),
        Expr::IsEmpty { path, negated } => {
            let col = column(columns, path, len)?;
            Ok((0..len).map(|i| col.is_present(i) == *negated).collect())
        }
        Expr::Compare { path, op, value } => {
            let col = column(columns, path, len)?;
            Ok(compare(col, *op, value, len))
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

fn compare(col: &Column, op: CmpOp, value: &Literal, len: usize) -> Vec<bool> {
    // Absent values never compare (SQL semantics); otherwise = and != are each
    // other's negation.
    let apply = |eq: Option<bool>| match (eq, op) {
        (None, _) => false,
        (Some(e), CmpOp::Eq) => e,
        (Some(e), CmpOp::Ne) => !e,
    };
    match (col, value) {
        (Column::Text(v), Literal::Text(lit)) => v
            .iter()
            .map(|x| apply(x.as_deref().filter(|s| !s.is_empty()).map(|s| s == lit)))
            .collect(),
        (Column::Text(v), Literal::Number(n)) => v
            .iter()
            .map(|x| {
                apply(
                    x.as_deref()
                        .filter(|s| !s.is_empty())
                        .map(|s| s.trim().parse::<f64>() == Ok(*n)),
                )
            })
            .collect(),
        (Column::Text(v), Literal::Bool(b)) => v
            .iter()
            .map(|x| {
                apply(
                    x.as_deref()
                        .filter(|s| !s.is_empty())
                        .map(|s| s.eq_ignore_ascii_case(if *b { "true" } else { "false" })),
                )
            })
            .collect(),
        (Column::Integer(v) | Column::Timestamp(v), Literal::Number(n)) => {
            v.iter().map(|x| apply(x.map(|x| x as f64 == *n))).collect()
        }
        (Column::Float(v), Literal::Number(n)) => {
            v.iter().map(|x| apply(x.map(|x| x == *n))).collect()
        }
        (Column::Boolean(v), Literal::Bool(b)) => {
            v.iter().map(|x| apply(x.map(|x| x == *b))).collect()
        }
        // Mixed kinds: compare the value's text form with the literal's.
        (col, lit) => {
            let lit = match lit {
                Literal::Text(s) => s.clone(),
                Literal::Number(n) => n.to_string(),
                Literal::Bool(b) => b.to_string(),
            };
            (0..len)
                .map(|i| apply(col.text(i).map(|s| s == lit)))
                .collect()
        }
    }
}
