//! proto3-JSON `google.protobuf.Duration`: a decimal number of seconds with an `s` suffix.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written as proto3 JSON does (`"1.5s"`, `"3600s"`, `"0.000001s"`).
///
/// Envoy also accepts the object form `{"seconds": N, "nanos": M}` in YAML converted to JSON;
/// both are accepted here so configs move across unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ProtoDuration(pub Duration);

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The string does not end in `s`.
    #[error("duration {0:?} must be seconds with an 's' suffix, e.g. \"1.5s\"")]
    MissingSuffix(String),
    /// The number before `s` is not a non-negative decimal.
    #[error("duration {0:?} is not a non-negative decimal number of seconds")]
    NotANumber(String),
    /// More than nine fractional digits (proto3 allows nanoseconds at most).
    #[error("duration {0:?} has more than 9 fractional digits")]
    TooPrecise(String),
}

impl ProtoDuration {
    /// The duration as std's type.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for ProtoDuration {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let number = s
            .strip_suffix('s')
            .ok_or_else(|| Error::MissingSuffix(s.to_string()))?;
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) {
            return Err(Error::NotANumber(s.to_string()));
        }
        if fraction.len() > 9 {
            return Err(Error::TooPrecise(s.to_string()));
        }
        let seconds: u64 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| Error::NotANumber(s.to_string()))?
        };
        let nanos: u32 = if fraction.is_empty() {
            0
        } else {
            let padded = format!("{fraction:0<9}");
            padded
                .parse()
                .map_err(|_| Error::NotANumber(s.to_string()))?
        };
        Ok(ProtoDuration(Duration::new(seconds, nanos)))
    }
}

impl fmt::Display for ProtoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.subsec_nanos();
        if nanos == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            let fraction = format!("{nanos:09}");
            write!(
                f,
                "{}.{}s",
                self.0.as_secs(),
                fraction.trim_end_matches('0')
            )
        }
    }
}

impl<'de> Deserialize<'de> for ProtoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Object {
                #[serde(default)]
                seconds: u64,
                #[serde(default)]
                nanos: u32,
            },
        }
        match Form::deserialize(deserializer)? {
            Form::Text(text) => text.parse().map_err(serde::de::Error::custom),
            Form::Object { seconds, nanos } if nanos < 1_000_000_000 => {
                Ok(ProtoDuration(Duration::new(seconds, nanos)))
            }
            Form::Object { .. } => Err(serde::de::Error::custom(
                "duration nanos must be below 1000000000",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proto3_json_durations() {
        let cases = [
            ("3600s", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.05s", Duration::from_millis(50)),
            (".25s", Duration::from_millis(250)),
            ("0.000000001s", Duration::from_nanos(1)),
        ];
        for (text, expected) in cases {
            assert_eq!(
                text.parse::<ProtoDuration>().unwrap().get(),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_what_proto3_refuses() {
        assert!(matches!(
            "10".parse::<ProtoDuration>(),
            Err(Error::MissingSuffix(_))
        ));
        assert!(matches!(
            "-1s".parse::<ProtoDuration>(),
            Err(Error::NotANumber(_))
        ));
        assert!(matches!(
            "s".parse::<ProtoDuration>(),
            Err(Error::NotANumber(_))
        ));
        assert!(matches!(
            "1ms".parse::<ProtoDuration>(),
            Err(Error::NotANumber(_))
        ));
        assert!(matches!(
            "0.0000000001s".parse::<ProtoDuration>(),
            Err(Error::TooPrecise(_))
        ));
    }

    #[test]
    fn round_trips_through_display_and_serde() {
        for text in ["3600s", "1.5s", "0.05s"] {
            assert_eq!(text.parse::<ProtoDuration>().unwrap().to_string(), text);
        }
        let object: ProtoDuration = serde_json::from_str(r#"{"seconds": 2, "nanos": 5}"#).unwrap();
        assert_eq!(object.get(), Duration::new(2, 5));
        let text: ProtoDuration = serde_json::from_str(r#""2s""#).unwrap();
        assert_eq!(text.get(), Duration::from_secs(2));
        assert!(serde_json::from_str::<ProtoDuration>(r#""2""#).is_err());
    }
}
