//! titan-dr: a Kubernetes operator that executes, measures and proves
//! disaster-recovery runbooks.

pub mod api;
pub mod backup;
pub mod cli;
pub mod controller;
pub mod evidence;
pub mod expect;
pub mod job;
pub mod leader;
pub mod local;
pub mod names;
pub mod operator;
pub mod plan;
pub mod probe;
pub mod process;
pub mod redis;
pub mod runbook;
pub mod snapshot_server;
pub mod telemetry;
pub mod tls;
