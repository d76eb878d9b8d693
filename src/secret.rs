//! Secret bytes (route secrets, signing keys, the admin token) in a leaf of their own, so the
//! checks that compare them and the config that reads them need not know each other. Never
//! printed; compared in constant time.

use std::fmt;

use subtle::ConstantTimeEq;

/// Secret bytes. `Debug` shows only the length.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// Constant time, so comparing a configured secret (reload, admin token) reveals nothing of it.
impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn equal_only_byte_for_byte_and_never_printed() {
        let a = Secret::new(b"token-aaaa".to_vec());
        assert_eq!(a, Secret::new(b"token-aaaa".to_vec()));
        assert_ne!(a, Secret::new(b"token-bbbb".to_vec()), "same length, other bytes");
        assert_ne!(a, Secret::new(b"token-aaa".to_vec()));
        assert!(!format!("{a:?}").contains("token"));
    }
}
