//! The subset of Avro the input topics use, decoded from single-object framed bytes.
//!
//! Only what the decoder is sure of is accepted: any byte sequence it cannot read exactly as the
//! Python path would (a bad union branch, an over-long varint, a non-canonical uuid text, ...)
//! makes it answer `None`, and the Python path decides (and words the rejection).

use serde_json::Value as Json;

/// A field type, as far as the shipped schemas use them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    Str,
    Bytes,
    Uuid,
    Long,
    TimestampMicros,
    Enum(Vec<String>),
    Nullable(Box<Type>),
    StrArray,
    /// an array of records: each record's field types, in order
    RecordArray(Vec<(String, Type)>),
}

/// A decoded value, borrowing the message bytes (strings) or the schema (enum symbols, defaults).
#[derive(Clone, Debug)]
pub enum Value<'a> {
    Null,
    Str(&'a str),
    Bytes(&'a [u8]),
    Long(i64),
    StrArray(Vec<&'a str>),
    Records(Vec<Vec<Value<'a>>>),
}

impl Type {
    /// The type of a field in a schema's JSON, or None when it is outside the subset.
    pub fn parse(json: &Json) -> Option<Type> {
        match json {
            Json::String(name) => match name.as_str() {
                "string" => Some(Type::Str),
                "bytes" => Some(Type::Bytes),
                "long" => Some(Type::Long),
                _ => None,
            },
            Json::Array(branches) => match branches.as_slice() {
                [Json::String(null), other] if null == "null" => {
                    Some(Type::Nullable(Box::new(Type::parse(other)?)))
                }
                _ => None,
            },
            Json::Object(map) => {
                let logical = map.get("logicalType").and_then(Json::as_str);
                match (map.get("type")?.as_str()?, logical) {
                    ("string", Some("uuid")) => Some(Type::Uuid),
                    ("string", None) => Some(Type::Str),
                    ("long", Some("timestamp-micros")) => Some(Type::TimestampMicros),
                    ("long", None) => Some(Type::Long),
                    ("enum", None) => {
                        let symbols = map.get("symbols")?.as_array()?;
                        let symbols: Option<Vec<String>> = symbols
                            .iter()
                            .map(|s| s.as_str().map(str::to_owned))
                            .collect();
                        Some(Type::Enum(symbols?))
                    }
                    ("array", None) => match map.get("items")? {
                        Json::String(items) if items == "string" => Some(Type::StrArray),
                        Json::Object(record) if record.get("type")? == "record" => {
                            let fields = record.get("fields")?.as_array()?;
                            let fields: Option<Vec<(String, Type)>> = fields
                                .iter()
                                .map(|f| {
                                    let name = f.get("name")?.as_str()?.to_owned();
                                    Some((name, Type::parse(f.get("type")?)?))
                                })
                                .collect();
                            Some(Type::RecordArray(fields?))
                        }
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The value a reader default (as written in the schema) stands for.
    pub fn default_value<'a>(&self, default: &'a Json) -> Option<Value<'a>> {
        match (self, default) {
            (Type::Nullable(_), Json::Null) => Some(Value::Null),
            (Type::Str, Json::String(text)) => Some(Value::Str(text)),
            (Type::StrArray, Json::Array(items)) if items.is_empty() => {
                Some(Value::StrArray(Vec::new()))
            }
            (Type::RecordArray(_), Json::Array(items)) if items.is_empty() => {
                Some(Value::Records(Vec::new()))
            }
            _ => None,
        }
    }

    /// Whether a value written as `self` is read as `reader` by taking it as it is: the same
    /// type, or enums (the symbol is then checked against the reader's with `reads_symbol`).
    pub fn resolves_to(&self, reader: &Type) -> bool {
        match (self, reader) {
            (Type::Enum(_), Type::Enum(_)) => true,
            (Type::Nullable(w), Type::Nullable(r)) => w.resolves_to(r),
            _ => self == reader,
        }
    }

    /// Whether a decoded value is one the reader type holds (an enum symbol it knows).
    pub fn holds(&self, value: &Value<'_>) -> bool {
        match (self, value) {
            (Type::Enum(symbols), Value::Str(symbol)) => symbols.iter().any(|s| s == symbol),
            (Type::Nullable(inner), value) => matches!(value, Value::Null) || inner.holds(value),
            _ => true,
        }
    }
}

/// Reads one message body.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    pub fn at_end(&self) -> bool {
        self.pos == self.data.len()
    }

    fn long(&mut self) -> Option<i64> {
        // ten bytes hold the 64 bits of every long; a tenth byte with more than the last bit
        // (a value past 64 bits) is left to the Python path, whose integers do not overflow
        let mut raw: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.data.get(self.pos)?;
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return None;
            }
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.long()?).ok()?;
        let end = self.pos.checked_add(len)?;
        let bytes = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    pub fn value(&mut self, t: &'a Type) -> Option<Value<'a>> {
        match t {
            Type::Str => Some(Value::Str(self.str()?)),
            Type::Bytes => Some(Value::Bytes(self.bytes()?)),
            Type::Uuid => {
                let text = self.str()?;
                is_canonical_uuid(text).then_some(Value::Str(text))
            }
            Type::Long => Some(Value::Long(self.long()?)),
            Type::TimestampMicros => {
                let micros = self.long()?;
                DATETIME_MICROS
                    .contains(&micros)
                    .then_some(Value::Long(micros))
            }
            Type::Enum(symbols) => {
                let index = usize::try_from(self.long()?).ok()?;
                Some(Value::Str(symbols.get(index)?.as_str()))
            }
            Type::Nullable(inner) => match self.long()? {
                0 => Some(Value::Null),
                1 => self.value(inner),
                _ => None,
            },
            Type::StrArray => {
                let mut items = Vec::new();
                while let Some(count) = self.block()? {
                    for _ in 0..count {
                        items.push(self.str()?);
                    }
                }
                Some(Value::StrArray(items))
            }
            Type::RecordArray(fields) => {
                let mut records = Vec::new();
                while let Some(count) = self.block()? {
                    for _ in 0..count {
                        let record: Option<Vec<Value<'a>>> =
                            fields.iter().map(|(_, t)| self.value(t)).collect();
                        records.push(record?);
                    }
                }
                Some(Value::Records(records))
            }
        }
    }

    /// The item count of an array's next block: Some(None) at the array's end, None when
    /// unreadable.
    fn block(&mut self) -> Option<Option<i64>> {
        let count = self.long()?;
        if count == 0 {
            return Some(None);
        }
        // a negative count is followed by the block's size in bytes
        if count < 0 {
            self.long()?;
            return Some(Some(count.checked_neg()?));
        }
        Some(Some(count))
    }
}

/// Whether `text` is a uuid in its 8-4-4-4-12 form, the only one taken here (Python's
/// `uuid.UUID` also takes braces, a `urn:uuid:` prefix, no hyphens: left to it).
pub fn is_canonical_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// `str(uuid.UUID(text))` of a canonical uuid text: lower case.
pub fn uuid_text(text: &str) -> String {
    text.to_ascii_lowercase()
}

/// The microseconds since 1970 of 0001-01-01 and of the end of 9999: Python's datetime range.
const DATETIME_MICROS: std::ops::RangeInclusive<i64> =
    -62_135_596_800_000_000..=253_402_300_799_999_999;

/// `(epoch + timedelta(microseconds=micros)).isoformat()` for a UTC datetime, or None outside
/// the years 1..=9999 that Python's datetime holds.
pub fn iso_utc(micros: i64) -> Option<String> {
    const MICROS_A_DAY: i64 = 86_400_000_000;
    let days = micros.div_euclid(MICROS_A_DAY);
    let of_day = micros.rem_euclid(MICROS_A_DAY);
    if !DATETIME_MICROS.contains(&micros) {
        return None;
    }
    let (year, month, day) = civil_from_days(days);
    let (seconds, fraction) = (of_day / 1_000_000, of_day % 1_000_000);
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut text = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    if fraction != 0 {
        text.push_str(&format!(".{fraction:06}"));
    }
    text.push_str("+00:00");
    Some(text)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_matches_python_isoformat() {
        assert_eq!(iso_utc(0).unwrap(), "1970-01-01T00:00:00+00:00");
        assert_eq!(iso_utc(1).unwrap(), "1970-01-01T00:00:00.000001+00:00");
        assert_eq!(iso_utc(-1).unwrap(), "1969-12-31T23:59:59.999999+00:00");
        assert_eq!(
            iso_utc(951_782_400_000_000).unwrap(),
            "2000-02-29T00:00:00+00:00"
        );
        assert_eq!(
            iso_utc(-62_135_596_800_000_000).unwrap(),
            "0001-01-01T00:00:00+00:00"
        );
        assert!(iso_utc(-62_135_596_800_000_001).is_none());
        assert!(iso_utc(253_402_300_800_000_000).is_none());
    }

    #[test]
    fn varints_zigzag() {
        let mut r = Reader::new(&[0x00, 0x01, 0x02, 0xac, 0x02]);
        assert_eq!(
            (r.long(), r.long(), r.long(), r.long()),
            (Some(0), Some(-1), Some(1), Some(150))
        );
        assert!(r.at_end());
        assert_eq!(Reader::new(&[0xff; 12]).long(), None);
        let mut extremes = [0xff; 10];
        extremes[9] = 0x01;
        assert_eq!(Reader::new(&extremes).long(), Some(i64::MIN));
        extremes[0] = 0xfe;
        assert_eq!(Reader::new(&extremes).long(), Some(i64::MAX));
        extremes[9] = 0x02; // past 64 bits
        assert_eq!(Reader::new(&extremes).long(), None);
    }

    #[test]
    fn uuid_forms() {
        assert!(is_canonical_uuid("123e4567-E89b-12d3-a456-426614174000"));
        assert!(!is_canonical_uuid("123e4567e89b12d3a456426614174000"));
        assert!(!is_canonical_uuid("{123e4567-e89b-12d3-a456-426614174000}"));
    }
}
