//! `inspect` and `verify`.
