//! Scalar values of the config file: durations (`500ms`, `72h`), sizes (`1MiB`) and secret
//! references (`env:NAME`, `file:PATH`, or inline).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::secret::Secret;

/// A duration written the human way: `500ms`, `30s`, `72h`, `7d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration ({e}); write e.g. 500ms, 30s, 72h")))
    }
}

impl std::fmt::Display for Dur {
    /// As a config would write it, in the largest unit that divides it (`72h` shows as `3d`),
    /// so a message can be copied back into the file.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        let (n, unit) = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")]
            .into_iter()
            .find(|(size, _)| ms >= *size && ms.is_multiple_of(*size))
            .map_or((ms, "ms"), |(size, unit)| (ms / size, unit));
        write!(f, "{n}{unit}")
    }
}

/// A byte size: a plain number of bytes, or with a unit (`512KiB`, `1MiB`, `10MB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(s: &str) -> Option<Size> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok()?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            _ => return None,
        };
        n.checked_mul(mult).map(Size)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => Size::parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!("`{s}` is not a size; write e.g. 1MiB, 512KiB, 65536"))
            }),
        }
    }
}

/// Where a secret comes from, as written in the file. Resolved once at load time so that a
/// missing variable or file is a start-up error, not a request-time surprise.
pub fn resolve_secret(written: &str, base: &Path) -> Result<Secret, String> {
    if let Some(name) = written.strip_prefix("env:") {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(Secret::new(v.into_bytes())),
            Ok(_) => Err(format!("environment variable {name} is empty")),
            Err(_) => Err(format!("environment variable {name} is not set")),
        }
    } else if let Some(path) = written.strip_prefix("file:") {
        let path = base.join(path);
        let mut bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // Files written by `echo` or editors end with a newline that is not part of the secret.
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        Ok(Secret::new(bytes))
    } else if written.is_empty() {
        Err("the secret is empty".into())
    } else {
        Ok(Secret::new(written.as_bytes().to_vec()))
    }
}

/// Reads a file named by a secret reference's `file:` form or a plain path (keys, certificates).
pub fn read_key_material(written: &str, base: &Path) -> Result<Vec<u8>, String> {
    if let Some(name) = written.strip_prefix("env:") {
        return std::env::var(name)
            .map(String::into_bytes)
            .map_err(|_| format!("environment variable {name} is not set"));
    }
    let path = base.join(written.strip_prefix("file:").unwrap_or(written));
    std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_as_a_config_writes_them() {
        for (secs, shown) in [(259_200, "3d"), (7_200, "2h"), (90, "90s"), (600, "10m"), (0, "0ms")] {
            assert_eq!(Dur(Duration::from_secs(secs)).to_string(), shown);
        }
        assert_eq!(Dur(Duration::from_millis(1_500)).to_string(), "1500ms");
        assert_eq!(Dur(Duration::from_secs(90_000)).to_string(), "25h");
    }

    #[test]
    fn sizes() {
        assert_eq!(Size::parse("1MiB"), Some(Size(1 << 20)));
        assert_eq!(Size::parse("512 KiB"), Some(Size(512 << 10)));
        assert_eq!(Size::parse("10MB"), Some(Size(10_000_000)));
        assert_eq!(Size::parse("65536"), Some(Size(65536)));
        assert_eq!(Size::parse("1XB"), None);
        assert_eq!(Size::parse("MiB"), None);
        assert_eq!(Size::parse("99999999999999999999GiB"), None);
    }

    #[test]
    fn secrets_resolve_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "abc\n").unwrap();
        assert_eq!(resolve_secret("file:s", dir.path()).unwrap().expose(), b"abc");
        assert_eq!(resolve_secret("inline", dir.path()).unwrap().expose(), b"inline");
        assert!(resolve_secret("env:PUSHGATE_TEST_SURELY_UNSET", dir.path()).is_err());
        assert!(resolve_secret("file:missing", dir.path()).is_err());
        let s = resolve_secret("hunter2hunter2", dir.path()).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
