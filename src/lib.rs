//! finaz-freeswitch: makes FreeSWITCH speak Finaz's "Telefonia Genérica" contract.

pub mod esl;
pub mod config;
pub mod storage;
