//! Start-up: the command line ([`cli`]), the config file ([`config`]), where log lines go
//! ([`logs`]), the signals pushgate handles itself ([`signals`]), the Pingora server and its
//! services ([`server`]), and development certificates ([`devcerts`]).

pub mod cli;
pub mod config;
pub mod logs;
pub mod signals;
pub mod server;
pub mod devcerts;
