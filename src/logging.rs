//! Log output (text or JSON via `tracing`) and the masking of phone numbers in it (LGPD).

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// `41988445566` -> `4198****566`: enough to recognise a call, not to dial it.
pub fn mask_phone(number: &str, enabled: bool) -> String {
    if !enabled || number.len() < 8 {
        return if enabled {
            "*".repeat(number.len())
        } else {
            number.to_string()
        };
    }
    let keep_head = 4;
    let keep_tail = 3;
    let stars = number.len() - keep_head - keep_tail;
    format!(
        "{}{}{}",
        &number[..keep_head],
        "*".repeat(stars),
        &number[number.len() - keep_tail..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_middle_digits() {
        assert_eq!(mask_phone("41988445566", true), "4198****566");
        assert_eq!(mask_phone("41988445566", false), "41988445566");
        assert_eq!(mask_phone("123", true), "***");
    }
}
