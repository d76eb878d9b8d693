//! One request, from its header to its answer: the Pingora handler ([`ingest`]) runs route →
//! method → identity and secret ([`route`], [`checks`]) → body ([`body`]) → decode (`jwe`,
//! `profile`) → [`accept`] (claim ids, the out-of-date guard [`stale`], store or deliver);
//! every refusal is answered from one table ([`refusal`]) and framed by [`reply`].

pub mod ingest;
pub mod route;
pub mod checks;
pub mod body;
pub mod accept;
pub mod stale;
pub mod refusal;
pub mod reply;
