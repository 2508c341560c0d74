//! Golden fixtures: parse, re-serialize, compare.
