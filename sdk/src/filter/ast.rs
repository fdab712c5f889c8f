//! The filter syntax tree.

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// Whether an ordering between a value and the literal satisfies the operator.
    pub fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Lt => ord == Less,
            CmpOp::Le => ord != Greater,
            CmpOp::Gt => ord == Greater,
            CmpOp::Ge => ord != Less,
        }
    }
}

/// Where a time literal starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBase {
    /// `now()`: the run's clock.
    Now,
    /// `today()`: midnight UTC of the run's clock.
    Today,
    /// `date('2026-01-05')` or `date('2026-01-05T10:00:00Z')`: a fixed instant.
    At(i64),
}

/// A time literal: a base plus an offset (`now() - 30d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeExpr {
    /// The base.
    pub base: TimeBase,
    /// Milliseconds added to the base (negative for `-`).
    pub offset_ms: i64,
}

impl TimeExpr {
    /// The instant, given the run's clock.
    pub fn resolve(&self, now_ms: i64) -> i64 {
        let base = match self.base {
            TimeBase::Now => now_ms,
            TimeBase::Today => now_ms - now_ms.rem_euclid(86_400_000),
            TimeBase::At(t) => t,
        };
        base.saturating_add(self.offset_ms)
    }
}

/// A literal value in a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `'text'` or `"text"`.
    Text(String),
    /// A decimal number.
    Number(f64),
    /// `true` or `false`.
    Bool(bool),
    /// An instant, possibly relative to the run's clock.
    Time(TimeExpr),
}

/// A text-matching operator.
#[derive(Debug, Clone, PartialEq)]
pub enum TextOp {
    /// `starts with 'x'`
    StartsWith(String),
    /// `contains 'x'`
    Contains(String),
    /// `like 'a%b_'`: `%` any run of characters, `_` one character, `\` escapes.
    Like(String),
}

/// A filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Every operand holds.
    And(Vec<Expr>),
    /// At least one operand holds.
    Or(Vec<Expr>),
    /// The operand does not hold.
    Not(Box<Expr>),
    /// `path is empty` (`negated`: `path is not empty`).
    IsEmpty {
        /// The attribute path.
        path: String,
        /// True for `is not empty`.
        negated: bool,
    },
    /// `path op literal`.
    Compare {
        /// The attribute path.
        path: String,
        /// The operator.
        op: CmpOp,
        /// The value compared with.
        value: Literal,
    },
    /// `path in (v, ...)` (`negated`: `not in`).
    In {
        /// The attribute path.
        path: String,
        /// The values.
        values: Vec<Literal>,
        /// True for `not in`.
        negated: bool,
    },
    /// `path starts with|contains|like 'text'` (`negated`: `not like` ...).
    Text {
        /// The attribute path.
        path: String,
        /// The operator and its text.
        op: TextOp,
        /// True for the `not` form.
        negated: bool,
    },
}

impl Expr {
    /// Collects each path once with whether its values are needed (`true`)
    /// or only its presence (`false`).
    pub(crate) fn collect_fields(&self, out: &mut Vec<(String, bool)>) {
        let mut add = |path: &String, values: bool| match out.iter_mut().find(|(p, _)| p == path) {
            Some(entry) => entry.1 |= values,
            None => out.push((path.clone(), values)),
        };
        match self {
            Expr::And(xs) | Expr::Or(xs) => xs.iter().for_each(|x| x.collect_fields(out)),
            Expr::Not(x) => x.collect_fields(out),
            Expr::IsEmpty { path, .. } => add(path, false),
            Expr::Compare { path, .. } | Expr::In { path, .. } | Expr::Text { path, .. } => {
                add(path, true)
            }
        }
    }
}
