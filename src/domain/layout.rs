//! Where a recording lives under `recordings.dir`: one layout (`recordings.path_template`)
//! for the path click2call asks FreeSWITCH to record to, the sandbox's recordings and the
//! download's search for a file no event described.

use std::path::{Path, PathBuf};

use super::template::{Rules, Template};

/// The placeholders of `recordings.path_template`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Uuid,
    Year,
    Month,
    Day,
}

const RULES: Rules<'static, Field> = Rules {
    known: &[
        ("uuid", Field::Uuid),
        ("yyyy", Field::Year),
        ("mm", Field::Month),
        ("dd", Field::Day),
    ],
    required: &[Field::Uuid],
    text: None,
};

/// `recordings.dir` and `recordings.path_template` (placeholders `{uuid}` `{yyyy}` `{mm}`
/// `{dd}`), checked: the template is a relative path under the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingLayout {
    dir: PathBuf,
    raw: String,
    template: Template<Field>,
}

impl RecordingLayout {
    /// Checks the template; the error names `recordings.path_template`.
    pub fn parse(dir: impl Into<PathBuf>, template: &str) -> Result<Self, String> {
        let key = "recordings.path_template";
        let parsed = Template::parse(key, template, &RULES)?;
        if template.starts_with('/') || template.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(format!(
                "{key} = {template:?} must be a relative path under recordings.dir, without '..'"
            ));
        }
        Ok(RecordingLayout {
            dir: dir.into(),
            raw: template.to_string(),
            template: parsed,
        })
    }

    /// The same template under another directory.
    pub fn with_dir(&self, dir: impl Into<PathBuf>) -> Self {
        RecordingLayout {
            dir: dir.into(),
            ..self.clone()
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The template as written.
    pub fn template(&self) -> &str {
        &self.raw
    }

    /// The file of channel `uuid` recorded on the UTC day of `unix_ms`.
    pub fn path(&self, uuid: &str, unix_ms: i64) -> PathBuf {
        let (y, m, d) = utc_day(unix_ms);
        self.dir.join(self.template.render(|out, f| match f {
            Field::Uuid => out.push_str(uuid),
            Field::Year => out.push_str(&format!("{y:04}")),
            Field::Month => out.push_str(&format!("{m:02}")),
            Field::Day => out.push_str(&format!("{d:02}")),
        }))
    }
}

/// The UTC calendar day of a Unix time in milliseconds (days-to-civil, H. Hinnant).
pub fn utc_day(unix_ms: i64) -> (i32, u32, u32) {
    let z = unix_ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_days() {
        assert_eq!(utc_day(0), (1970, 1, 1));
        assert_eq!(utc_day(1_795_651_200_000), (2026, 11, 26));
        assert_eq!(utc_day(951_782_400_000), (2000, 2, 29));
        assert_eq!(utc_day(-1), (1969, 12, 31));
    }

    #[test]
    fn paths_follow_the_template() {
        let l = RecordingLayout::parse("/rec", "{yyyy}/{mm}/{dd}/{uuid}.wav").unwrap();
        assert_eq!(
            l.path("abc", 1_767_312_000_000),
            PathBuf::from("/rec/2026/01/02/abc.wav")
        );
        let flat = RecordingLayout::parse("/rec", "dialer/{uuid}.wav").unwrap();
        assert_eq!(flat.path("abc", 0), PathBuf::from("/rec/dialer/abc.wav"));
        for bad in [
            "/abs/{uuid}.wav",
            "../{uuid}.wav",
            "a//{uuid}",
            "{yyyy}.wav",
            "{x}{uuid}",
        ] {
            let e = RecordingLayout::parse("/rec", bad).unwrap_err();
            assert!(e.starts_with("recordings.path_template = "), "{e}");
        }
    }
}
