//! The one integration test binary. Each module covers one area from outside, through
//! the `cordon` binary or the public library API.

// The whole binary is test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod archive_cli;
mod archive_safety;
mod audit;
mod check;
mod config;
mod debrief;
mod doctor;
mod e2e;
mod faults;
mod fhir;
mod grammar;
mod guard;
mod harness;
mod hostile;
mod operations;
mod patient;
mod prevention;
mod record;
mod retention;
mod schedule;
mod standdown;
mod support;
mod trust;
mod verify;
mod world;
