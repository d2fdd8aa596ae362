//! Test doubles and helpers shared by the integration tests.

// Each test uses part of the kit; what one file leaves unused another uses.
#![allow(dead_code)]

pub mod captures;
pub mod harness;
pub mod outbound_driver;
pub mod standin;
