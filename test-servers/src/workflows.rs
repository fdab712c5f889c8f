//! Generated workflow files for the tests and benchmarks of `validate`.

use std::fmt::Write;

/// A workflow of `n` activities (a multiple of 4) with exactly one problem
/// each, in four kinds that `validate` finds in different places: a
/// misspelt plugin, a bad config, a filter nested too deep (the query
/// plugin's parser) and a transition to no activity.
pub fn with_one_problem_per_activity(n: usize) -> String {
    assert!(n.is_multiple_of(4), "n must be a multiple of 4");
    let deep = format!("{}email is empty{}", "(".repeat(100), ")".repeat(100));
    let mut out = String::from("name = \"many-problems\"\n");
    for i in (0..n).step_by(4) {
        let (a, b, c, d) = (i, i + 1, i + 2, i + 3);
        // The query leads to the wait after it, so that only the dangling
        // transition is wrong there.
        write!(
            out,
            "\n[activity.a{a}]\ntype = \"qeury\"\n\
             \n[activity.a{b}]\ntype = \"wait\"\nconfig = {{ duration = \"soon\" }}\n\
             \n[activity.a{c}]\ntype = \"query\"\nnext = {{ done = \"a{d}\" }}\n\
             config = {{ dimension = \"recipient\", filter = \"{deep}\" }}\n\
             \n[activity.a{d}]\ntype = \"wait\"\nconfig = {{ duration = \"1d\" }}\n\
             next = {{ done = \"nowhere{d}\" }}\n"
        )
        .expect("writing to a String");
    }
    out
}
