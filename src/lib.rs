//! pushgate: an mTLS ingress for payment-network push notifications, on Pingora.
//!
//! A notification flows through the modules in this order:
//! [`tls`] (handshake, client certificate) → [`conn`] (connection cap, header deadlines) →
//! [`identity`] (canonical DN, pin) →
//! [`ingest`] (the Pingora handler) → [`route`] → [`checks`] → [`body`] → [`jwe`] →
//! [`profile`] (events and ids) → [`accept`] ([`dedupe`], then store or deliver) →
//! [`reply`]; and afterwards [`forward`] to the app.
#![forbid(unsafe_code)]

pub mod accept;
pub mod admin;
pub mod body;
pub mod checks;
pub mod cli;
pub mod config;
pub mod conn;
pub mod dedupe;
pub mod devcerts;
pub mod forward;
pub mod identity;
pub mod ingest;
pub mod jwe;
pub mod metrics;
pub mod names;
pub mod profile;
pub mod redact;
pub mod refusal;
pub mod reload;
pub mod reply;
pub mod route;
pub mod secret;
pub mod server;
pub mod shared;
pub mod spool;
pub mod spool_cli;
pub mod stale;
pub mod tls;
pub mod tls_files;
