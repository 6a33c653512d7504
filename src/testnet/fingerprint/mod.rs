//! Circuit fingerprinting (issue 22, measurement): an observer at the guard records each
//! circuit's cells ([`recorder`]), clients report what each circuit was for, and
//! classifiers ([`classifier`]) try to tell onion-service circuits from exit circuits.
//! Used by `allium bench fingerprint` and tests/circuit_fingerprint.rs; docs/PERFORMANCE.md
//! ("Circuit fingerprinting") has the method and the figures.

pub mod classifier;
pub mod dataset;
pub mod recorder;
pub mod report;
pub mod workload;
