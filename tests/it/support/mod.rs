//! Test doubles and helpers shared by the integration tests.

pub mod captures;
