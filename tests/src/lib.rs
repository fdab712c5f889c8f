//! See tests/README.md.
