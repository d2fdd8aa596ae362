//! finaz-freeswitch: makes FreeSWITCH speak Finaz's "Telefonia Genérica" contract.
//!
//! `esl` is a self-contained event socket library; `config` and `storage` are the service's
//! foundations; `admin` and `metrics` the operator's view; `app` wires them together.

pub mod accept;
pub mod admin;
pub mod admission;
pub mod app;
pub mod cli;
pub mod click2call;
pub mod config;
pub mod console;
pub mod dialer;
pub mod doctor;
pub mod domain;
pub mod esl;
pub mod http;
pub mod log_limit;
pub mod logging;
pub mod metrics;
pub mod nodes;
pub mod outbox;
pub mod recordings;
pub mod sandbox;
pub mod storage;
