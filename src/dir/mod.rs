//! TEMPORARY (exit-wip): policy only, replaced by the dir branch at merge.
pub mod policy;
mod wire;
pub use policy::{ExitPolicy, PolicyAction, PolicyError, PolicyRule};
