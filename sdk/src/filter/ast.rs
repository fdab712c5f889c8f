//! The filter syntax tree.

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
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
}

impl Expr {
    pub(crate) fn collect_paths(&self, out: &mut Vec<String>) {
        match self {
            Expr::And(xs) | Expr::Or(xs) => xs.iter().for_each(|x| x.collect_paths(out)),
            Expr::Not(x) => x.collect_paths(out),
            Expr::IsEmpty { path, .. } | Expr::Compare { path, .. } => {
                if !out.contains(path) {
                    out.push(path.clone());
                }
            }
        }
    }
}
