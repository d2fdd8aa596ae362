//! A self-contained FreeSWITCH event socket (ESL) library: framing, events, commands, client.
//!
//! It imports nothing else from this crate and could be published on its own.
//! - [`codec`]: bytes <-> [`Frame`]s (and [`Command`]s to bytes);
//! - [`event`]: the event inside an event frame;
//! - [`command`]: typed commands that cannot smuggle a second command;
//! - [`subscription`]: event names and CUSTOM subclasses, in the order FreeSWITCH needs;
//! - [`client`]: the inbound client (pipelined replies, bgapi jobs, events, reconnects);
//! - [`outbound`]: one session of the outbound (`socket` app) mode.

mod backoff;
pub mod client;
pub mod codec;
pub mod command;
mod connection;
pub mod error;
pub mod event;
pub mod frame;
pub mod headers;
pub mod outbound;
mod shared;
pub mod stats;
pub mod subscription;
mod supervisor;

pub use client::{Client, ClientConfig, ConnectionState, Job};
pub use codec::EslCodec;
pub use command::{Command, EventFormat};
pub use error::{ClientError, CodecError, CommandError, EventError};
pub use event::Event;
pub use frame::{ContentType, Frame};
pub use headers::Headers;
pub use subscription::Subscription;
