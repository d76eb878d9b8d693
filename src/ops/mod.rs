//! What operators see and do: the metrics ([`metrics`]), the admin API ([`admin`]), reload
//! without dropping a connection ([`reload`]) and the `pushgate spool` commands
//! ([`spool_cli`]).

pub mod metrics;
pub mod admin;
pub mod reload;
pub mod spool_cli;
