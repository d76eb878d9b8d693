//! pushgate: an mTLS ingress for payment-network push notifications, on Pingora.
//!
//! The modules are declared in the order a notification flows:
//! [`listener`] (handshake, client certificate, connection limits) → [`ingress`] (the
//! Pingora handler: route, checks, body, then [`jwe`] and [`profile`] to read the events,
//! [`dedupe`] to claim their ids, [`spool`] to make them safe, one table of answers) →
//! [`forward`] to the app. [`shared`] is the state they share; [`ops`] is what operators see
//! and do; [`boot`] starts it all. [`names`], [`secret`] and [`redact`] are leaves every stage
//! may use.
#![forbid(unsafe_code)]

pub mod names;
pub mod secret;
pub mod redact;

pub mod listener;
pub mod ingress;
pub mod jwe;
pub mod profile;
pub mod dedupe;
pub mod spool;
pub mod forward;
pub mod shared;
pub mod ops;
pub mod boot;
