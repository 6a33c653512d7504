//! TEMPORARY (exit-wip): policy only, replaced by the dir branch at merge.
pub mod policy;
pub mod request;
mod wire;
pub use policy::{ExitPolicy, PolicyAction, PolicyError, PolicyRule};
