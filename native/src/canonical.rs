//! `ids.canonical_json` of what `json.loads` makes of a text: compact, keys sorted, UTF-8, with
//! Python's number forms (`int` as its digits, `float` as its `repr`).

use serde_json::Value as Json;

/// Limits of the Python path that the parse must honour to accept the same texts.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// deepest nesting of arrays and objects validation accepts
    pub max_depth: usize,
    /// `sys.get_int_max_str_digits()`: longer integers make `json.loads` fail
    pub max_int_digits: usize,
}

/// Keys that name a recipient's address in a provider's callback, matched ASCII
/// case-insensitively at any depth: `leo_activation.addresses.ADDRESS_KEYS`.
const ADDRESS_KEYS: &[&str] = &[
    "email",
    "recipient",
    "recipients",
    "to",
    "destination",
    "emailaddress",
    "phone",
    "phonenumber",
    "mobile",
    "mobile_number",
    "address",
    "headers",
    "commonheaders",
];

fn is_address_key(key: &str) -> bool {
    key.is_ascii() && ADDRESS_KEYS.contains(&key.to_ascii_lowercase().as_str())
}

/// The canonical text of a JSON object text, or None when the Python path would not accept it
/// exactly so (not JSON, not an object, too deep, a number it would refuse, a lone surrogate).
/// `without_addresses`: address fields are left out (`addresses.without_addresses`).
pub fn canonical_object(text: &str, limits: Limits, without_addresses: bool) -> Option<String> {
    let value: Json = serde_json::from_str(text).ok()?;
    if !value.is_object() || depth(&value) > limits.max_depth {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    write_value(&mut out, &value, limits, without_addresses)?;
    Some(out)
}

fn depth(value: &Json) -> usize {
    match value {
        Json::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Json::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn write_value(out: &mut String, value: &Json, limits: Limits, redact: bool) -> Option<()> {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(true) => out.push_str("true"),
        Json::Bool(false) => out.push_str("false"),
        Json::Number(number) => write_number(out, number.as_str(), limits)?,
        Json::String(text) => quote(out, text),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, limits, redact)?;
            }
            out.push(']');
        }
        Json::Object(map) => {
            // serde_json's map is ordered by key bytes: code point order, as Python sorts
            out.push('{');
            let kept = map
                .iter()
                .filter(|(key, _)| !(redact && is_address_key(key)));
            for (i, (key, item)) in kept.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                quote(out, key);
                out.push(':');
                write_value(out, item, limits, redact)?;
            }
            out.push('}');
        }
    }
    Some(())
}

fn write_number(out: &mut String, text: &str, limits: Limits) -> Option<()> {
    if !text.contains(['.', 'e', 'E']) {
        let digits = text.trim_start_matches('-');
        if digits.len() > limits.max_int_digits {
            return None;
        }
        out.push_str(if digits == "0" { "0" } else { text });
        return Some(());
    }
    let value: f64 = text.parse().ok()?;
    if !value.is_finite() {
        return None; // validation refuses what overflows to infinity
    }
    out.push_str(&python_repr(value));
    Some(())
}

/// Python's `repr(float)`: the shortest digits that read back as the same float, positional
/// for decimal exponents in -4..16 (with a `.0` when whole), scientific otherwise.
pub fn python_repr(value: f64) -> String {
    let sci = format!("{:e}", value.abs());
    let (mantissa, exponent) = sci.split_once('e').expect("LowerExp writes an exponent");
    let exponent: i32 = exponent
        .parse()
        .expect("LowerExp writes a decimal exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if value.is_sign_negative() { "-" } else { "" };
    let point = exponent + 1; // digits before the decimal point
    let n = digits.len() as i32;
    let body = if point <= -4 || point > 16 {
        let rest = if n > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{}{rest}e{exp_sign}{:02}", &digits[..1], exponent.abs())
    } else if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point >= n {
        format!("{digits}{}.0", "0".repeat((point - n) as usize))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    };
    format!("{sign}{body}")
}

/// `items` written into `out` by `write`, separated by commas (a JSON array's or object's
/// members, an array literal's elements).
pub fn comma_separated<T>(
    out: &mut String,
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut String, T),
) {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write(out, item);
    }
}

/// `json.encoder.encode_basestring`: the string in quotes, escaping only `"`, `\` and control
/// characters (`ensure_ascii=False`).
pub fn quote(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in text.char_indices() {
        let escaped = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{08}' => "\\b",
            '\u{0c}' => "\\f",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&text[start..i]);
        if escaped.is_empty() {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push_str(escaped);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&text[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_depth: 64,
        max_int_digits: 4300,
    };

    #[test]
    fn floats_read_as_python_writes_them() {
        for (value, repr) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e16, "1.5e+16"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123.456, "123.456"),
            (1e100, "1e+100"),
            (-2.5e-300, "-2.5e-300"),
        ] {
            assert_eq!(python_repr(value), repr);
        }
    }

    #[test]
    fn objects_are_sorted_and_compact() {
        let text = r#" {"b": [1, 2.50, -0], "a": "x\u0001\"y", "a": "last", "c": {}} "#;
        assert_eq!(
            canonical_object(text, LIMITS, false).unwrap(),
            r#"{"a":"last","b":[1,2.5,0],"c":{}}"#
        );
        let mut out = String::new();
        quote(&mut out, "x\u{1}\"\u{7f}é");
        assert_eq!(out, "\"x\\u0001\\\"\u{7f}é\"");
    }

    #[test]
    fn address_fields_are_left_out_at_any_depth() {
        let text = r#"{"Email": "a@b.c", "mail": {"destination": ["a@b.c"], "id": 1,
                       "commonHeaders": {"to": ["a@b.c"]}}, "items": [{"TO": "+84"}],
                       "EMAİL": "kept: not ASCII"}"#;
        assert_eq!(
            canonical_object(text, LIMITS, true).unwrap(),
            r#"{"EMAİL":"kept: not ASCII","items":[{}],"mail":{"id":1}}"#
        );
    }

    #[test]
    fn what_python_refuses_is_left_to_it() {
        for text in [
            "[]",
            "1e999",
            r#"{"a":1e999}"#,
            r#"{"s":"\ud83e"}"#,
            "{",
            "NaN",
        ] {
            assert!(canonical_object(text, LIMITS, false).is_none(), "{text}");
        }
        let deep = format!("{}1{}", r#"{"a":"#.repeat(65), "}".repeat(65));
        assert!(canonical_object(&deep, LIMITS, false).is_none());
    }
}
