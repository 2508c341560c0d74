//! Property tests of rules and the overlap validator.
