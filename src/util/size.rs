//! Sizes written with units in pipeline files (`memory_budget: 256MiB`): a number of bytes, or a
//! number with a unit — B, KB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB (powers of 1024),
//! case-insensitive, an optional space between.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = (t[..split].trim(), t[split..].trim());
        if unit.is_empty() || unit.eq_ignore_ascii_case("b") {
            // Bytes: a whole number, exactly (no float rounding above 2^53).
            return number.parse::<u64>().map(ByteSize).map_err(|_| {
                format!(
                    "`{s}` is not a size: bytes are a whole number; or write a unit, e.g. 256MiB"
                )
            });
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{s}` is not a size: write a number with a unit, e.g. 256MiB"))?;
        let scale: f64 = match unit.to_ascii_lowercase().as_str() {
            "kb" | "k" => 1e3,
            "mb" | "m" => 1e6,
            "gb" | "g" => 1e9,
            "tb" | "t" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0f64.powi(4),
            _ => {
                return Err(format!(
                    "`{s}`: unknown unit `{unit}` (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
                ));
            }
        };
        let bytes = value * scale;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(format!("`{s}` is too large"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1 << 20;
        match self.0 {
            n if n >= 1 << 30 && n % (1 << 30) == 0 => write!(f, "{}GiB", n >> 30),
            n if n >= MIB && n % MIB == 0 => write!(f, "{}MiB", n >> 20),
            n => write!(f, "{n}B"),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Signed(i64),
            Float(f64),
            Text(String),
        }
        let bad = |v: String| {
            serde::de::Error::custom(format!(
                "`{v}` is not a size: write bytes as a whole number, or a number with a unit, e.g. 256MiB"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Signed(n) => Err(bad(n.to_string())),
            Raw::Float(f) => Err(bad(f.to_string())),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size: bytes, or a number with a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 256MiB",
            "type": ["string", "integer"],
            "pattern": "^\\s*([0-9]+|[0-9]*\\.?[0-9]+\\s*([kKmMgGtT]([iI][bB]|[bB])?))\\s*([bB])?\\s*$",
            "minimum": 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn sizes_with_units() {
        assert_eq!(ByteSize::parse("256MiB"), Ok(ByteSize(256 << 20)));
        assert_eq!(ByteSize::parse("1 GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("1.5GB"), Ok(ByteSize(1_500_000_000)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert_eq!(ByteSize::parse("128mib"), Ok(ByteSize(128 << 20)));
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("MiB").is_err());
        assert!(ByteSize::parse("1e400").is_err());
        assert!(ByteSize::parse("99999999999999999999TB").is_err());
        assert!(ByteSize::parse("1.5").is_err());
        assert_eq!(
            ByteSize::parse("9007199254740993"),
            Ok(ByteSize(9007199254740993))
        );
        assert!(serde_json::from_str::<ByteSize>("-1").is_err());
        assert!(serde_json::from_str::<ByteSize>("1.5").is_err());
        assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
        assert_eq!(ByteSize(128 << 20).to_string(), "128MiB");
        let y: ByteSize = serde_json::from_str("\"64MiB\"").unwrap();
        assert_eq!(y, ByteSize(64 << 20));
        let n: ByteSize = serde_json::from_str("1000").unwrap();
        assert_eq!(n, ByteSize(1000));
    }
}
