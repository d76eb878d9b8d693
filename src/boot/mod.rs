//! Start-up: the command line ([`cli`]), the config file ([`config`]), the Pingora server and
//! its services ([`server`]), and development certificates ([`devcerts`]).

pub mod cli;
pub mod config;
pub mod server;
pub mod devcerts;
