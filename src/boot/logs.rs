//! Where log lines go: standard error by default (under `-d`, Pingora points it at
//! `server.error_log`), or `log.file`, appended, and reopened on SIGHUP and SIGUSR1 so that
//! logrotate can move it away. A daemon with neither would write into nothing: refused.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::Signal;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::MakeWriter;

use crate::boot::config::{Config, LogFormat};

/// Refuses a daemon whose log lines would be lost: without a terminal, only `error_log` (where
/// Pingora points standard error) or `log.file` keeps them. Opens `error_log` here too, where a
/// failure is one line (Pingora's daemon start unwraps it).
pub fn check_daemon(config: &Config) -> Result<(), String> {
    let file = config.source.display();
    match (&config.server.error_log, &config.log.file) {
        (None, None) => Err(format!(
            "{file}: run -d needs server.error_log or log.file: a daemon has no terminal, and its log lines would be lost"
        )),
        (Some(error_log), _) => append(Path::new(error_log))
            .map(drop)
            .map_err(|e| format!("{file}: server.error_log: {e}")),
        (None, Some(_)) => Ok(()),
    }
}

/// Installs the process's subscriber: `log.format`, `log.level` (or `RUST_LOG`), and the
/// destination. Returns the log file, for [`Reopen`].
pub fn init(config: &Config) -> Result<Option<Arc<LogFile>>, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let file = match &config.log.file {
        Some(path) => Some(Arc::new(
            LogFile::open(path).map_err(|e| format!("{}: log.file: {e}", config.source.display()))?,
        )),
        None => None,
    };
    let (writer, ansi) = match &file {
        Some(f) => (BoxMakeWriter::new(Lines(f.clone())), false),
        // Colours only for a person at a terminal, never in files or collectors.
        None => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(ansi)
        .with_writer(writer);
    // A second init (tests in one process) is harmless: the first subscriber stays.
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    Ok(file)
}

fn append(path: &Path) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// `log.file`: the open file, swapped whole on reopen.
pub struct LogFile {
    path: PathBuf,
    file: RwLock<Arc<File>>,
}

impl LogFile {
    pub fn open(path: &Path) -> Result<LogFile, String> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: RwLock::new(Arc::new(append(path)?)),
        })
    }

    /// Opens the path again (a new file once logrotate has moved the old one); lines being
    /// written finish in the old file. On failure the old file stays in use.
    pub fn reopen(&self) -> Result<(), String> {
        let fresh = Arc::new(append(&self.path)?);
        *self.file.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    fn current(&self) -> Arc<File> {
        self.file.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The subscriber's writer for `log.file`: each event is formatted whole, then written with
/// one call (O_APPEND keeps concurrent lines whole).
struct Lines(Arc<LogFile>);

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(self.0.current())
    }
}

struct Line(Arc<File>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

/// Reopens `log.file` on SIGHUP and SIGUSR1 (see [`crate::boot::signals`]).
pub struct Reopen {
    pub file: Arc<LogFile>,
    /// Taken by the service when it starts.
    pub signals: Mutex<Option<(Signal, Signal)>>,
}

#[async_trait::async_trait]
impl BackgroundService for Reopen {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some((mut hangup, mut usr1)) = self.signals.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return;
        };
        loop {
            let signal = tokio::select! {
                Some(()) = hangup.recv() => "SIGHUP",
                Some(()) = usr1.recv() => "SIGUSR1",
                _ = shutdown.changed() => return,
            };
            match self.file.reopen() {
                Ok(()) => tracing::info!(path = %self.file.path.display(), signal, "log file reopened"),
                Err(e) => {
                    tracing::error!(error = %e, signal, "cannot reopen the log file; still writing to the old one")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopen_after_a_move_writes_to_a_new_file_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pushgate.log");
        let log = Arc::new(LogFile::open(&path).unwrap());
        let lines = Lines(log.clone());
        lines.make_writer().write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("pushgate.log.1")).unwrap();
        lines.make_writer().write_all(b"two\n").unwrap();
        log.reopen().unwrap();
        lines.make_writer().write_all(b"three\n").unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("pushgate.log.1"), "one\ntwo\n");
        assert_eq!(read("pushgate.log"), "three\n");
    }
}
