//! titan-dr: a Kubernetes operator that executes, measures and proves
//! disaster-recovery runbooks.

pub mod api;
pub mod operator;
