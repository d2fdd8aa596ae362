//! Log output (text or JSON via `tracing`) and the masking of phone numbers in it (LGPD).

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`. In the
/// sandbox every line says so (`SANDBOX ` before a text line, `"sandbox":true` in JSON).
pub fn init(config: &LogConfig, sandbox: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let format = config.format;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: not in journald, files or log shippers.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(move || Stderr { sandbox, format });
    let _ = match config.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Standard error, marking each line in the sandbox.
struct Stderr {
    sandbox: bool,
    format: LogFormat,
}

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        if !self.sandbox {
            return err.write(buf);
        }
        // The formatter hands over whole lines (one event per write).
        match self.format {
            LogFormat::Text => {
                err.write_all(b"SANDBOX ")?;
                err.write_all(buf)?;
            }
            LogFormat::Json => match buf.strip_prefix(b"{") {
                Some(rest) => {
                    err.write_all(b"{\"sandbox\":true,")?;
                    err.write_all(rest)?;
                }
                None => err.write_all(buf)?,
            },
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
