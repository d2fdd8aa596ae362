//! The integration test binary: real sockets on 127.0.0.1:0, a FreeSWITCH stand-in built from
//! the captures, real HTTP.

mod browser;
mod captures;
mod click2call;
mod client;
mod codec_props;
mod conformance;
mod console;
mod dashboards;
mod dialer;
mod edge;
mod nodes;
mod openapi;
mod operator;
mod outbound;
mod recording;
mod replicas;
mod service;
mod structure;
mod support;
