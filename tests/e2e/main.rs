//! Behaviour tests against the real local control plane (one per test process, shared;
//! one namespace per test). Run with `make test` or `make test-e2e FILTER=...`.

mod api;
mod cluster;
mod container;
mod controller;
mod faults;
mod hardening;
mod install;
mod kstatus;
mod mode;
mod refusal;
mod repair;
mod repair_guard;
mod shard;
mod status;
mod templates;
mod writers;
