//! Process tests of `examples/relay.rs`.
