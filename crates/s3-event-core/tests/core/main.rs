//! Integration tests of s3-event-core, linked as one binary: golden fixtures,
//! property tests of records and rules.
mod golden;
mod records;
mod rules;
