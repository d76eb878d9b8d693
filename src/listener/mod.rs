//! Where a notification arrives: the TLS handshake and the client certificate ([`tls`], its
//! files [`tls_files`]), the sender's canonical DN and pin ([`identity`]), and the connection
//! cap and header deadlines ([`conn`]); the listening sockets, bound before Pingora runs
//! ([`socket`]), and the proof from inside that the listener accepts ([`probe`]).

pub mod tls_files;
pub mod tls;
pub mod identity;
pub mod conn;
pub mod socket;
pub mod probe;
