//! The COPY lines of the message types prepared natively, as their handlers' `prepare` writes
//! them (`leo_activation.bulk.copy_line` of `receipts.receipt_row`,
//! `profile_changes.profile_row` and `profile_changes.membership_row`), with the few values
//! their `apply` reads (`Row.key`).

use sha2::{Digest, Sha256};

use crate::avro::{iso_utc, uuid_text, Value};
use crate::canonical::{comma_separated, quote};
use crate::Decoded;

/// Where a message came from: the last columns of a receipt's row.
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i64,
    pub offset: i64,
}

/// What a message's row is made of, besides its decoded fields.
pub struct Context<'a> {
    pub source: Source<'a>,
    pub header_correlation: Option<&'a str>,
    pub namespace: &'a uuid::Uuid,
    pub rules: &'a Rules,
}

/// The checks of `profile_changes.consents_by_channel`, given by the Python side.
pub struct Rules {
    pub consent_channels: Vec<String>,
    pub consent_states: Vec<String>,
    pub consent_max_text: usize,
}

/// What `apply` reads of a row besides writing it (`Row.key`).
pub enum Key {
    None,
    /// a profile upsert's profile id, version and content hash
    Profile(String, i64, [u8; 32]),
    /// a membership change's segment and profile id
    Membership(String, String),
}

/// A prepared row: its COPY line and its key, made without the interpreter.
pub struct Prepared {
    pub tenant: String,
    pub correlation: Option<String>,
    pub line: Vec<u8>,
    pub key: Key,
}

#[derive(Clone, Copy)]
pub enum Builder {
    Receipt,
    ProfileUpsert,
    MembershipChange,
}

// Every field of the reader version each builder was written for, in the order `build` takes
// their slots: a newer reader version with other fields leaves its kind to the Python path.
const RECEIPT_FIELDS: &[&str] = &[
    "tenant_id",
    "delivery_id",
    "provider",
    "provider_message_id",
    "status",
    "occurred_at",
    "destination",
    "channel",
    "provider_response",
    "correlation_id",
];
const PROFILE_FIELDS: &[&str] = &[
    "tenant_id",
    "profile_id",
    "version",
    "occurred_at",
    "ext_id",
    "email",
    "mobile_number",
    "data_labels",
    "push_token",
    "raw_attributes",
    "consents",
    "key_id",
    "ext_id_sealed",
    "email_sealed",
    "mobile_number_sealed",
    "push_token_sealed",
    "raw_attributes_sealed",
    "correlation_id",
];
// where the sealed fields (`sealing.SEALED_FIELDS`, each `<name>_sealed`) are in PROFILE_FIELDS
const SEALED: std::ops::Range<usize> = 12..17;
const MEMBERSHIP_FIELDS: &[&str] = &[
    "tenant_id",
    "segment_key",
    "sequence",
    "profile_id",
    "action",
    "occurred_at",
    "profile_version",
    "correlation_id",
];
// the fields of a consent fact, in the order `consents` reads them
const CONSENT_FIELDS: &[&str] = &["channel", "state", "legal_basis", "source", "occurred_at"];

fn text<'a>(value: &Value<'a>) -> Option<Option<&'a str>> {
    match value {
        Value::Null => Some(None),
        Value::Str(text) => Some(Some(text)),
        _ => None,
    }
}

fn bytes<'a>(value: &Value<'a>) -> Option<Option<&'a [u8]>> {
    match value {
        Value::Null => Some(None),
        Value::Bytes(bytes) => Some(Some(bytes)),
        _ => None,
    }
}

/// `bytes.hex()`
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn json_text(out: &mut String, value: Option<&str>) {
    match value {
        None => out.push_str("null"),
        Some(text) => quote(out, text),
    }
}

/// A line of `COPY … FROM STDIN` text, written field by field as `bulk.copy_line` does.
struct Line {
    out: Vec<u8>,
}

impl Line {
    fn new(capacity: usize) -> Self {
        Line {
            out: Vec::with_capacity(capacity),
        }
    }

    fn next(&mut self) {
        if !self.out.is_empty() {
            self.out.push(b'\t');
        }
    }

    /// a backslash and the control characters that would end a field or a line, escaped
    fn escaped(&mut self, text: &str) {
        for &b in text.as_bytes() {
            let escape = match b {
                b'\\' => b'\\',
                b'\t' => b't',
                b'\n' => b'n',
                b'\r' => b'r',
                0x08 => b'b',
                0x0c => b'f',
                0x0b => b'v',
                _ => {
                    self.out.push(b);
                    continue;
                }
            };
            self.out.extend_from_slice(&[b'\\', escape]);
        }
    }

    fn text(&mut self, text: &str) {
        self.next();
        self.escaped(text);
    }

    fn opt(&mut self, text: Option<&str>) {
        match text {
            Some(text) => self.text(text),
            None => {
                self.next();
                self.out.extend_from_slice(b"\\N");
            }
        }
    }

    fn int(&mut self, value: i64) {
        self.next();
        self.out.extend_from_slice(value.to_string().as_bytes());
    }

    /// a text array literal, elements quoted unless bare (psycopg's rule)
    fn array(&mut self, items: &[&str]) {
        let mut literal = String::from("{");
        comma_separated(&mut literal, items, |literal, item| {
            let bare = !item.is_empty()
                && !item.eq_ignore_ascii_case("null")
                && !item.contains([
                    '"', '{', '}', ',', '\\', ' ', '\t', '\n', '\r', '\x0c', '\x0b',
                ]);
            if bare {
                literal.push_str(item);
            } else {
                literal.push('"');
                for c in item.chars() {
                    if c == '"' || c == '\\' {
                        literal.push('\\');
                    }
                    literal.push(c);
                }
                literal.push('"');
            }
        });
        literal.push('}');
        self.text(&literal);
    }

    /// bytea in its hex form
    fn bytea(&mut self, bytes: &[u8]) {
        self.next();
        self.out.extend_from_slice(b"\\\\x");
        self.out.extend_from_slice(hex(bytes).as_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.push(b'\n');
        self.out
    }
}

/// `record.get("correlation_id") or header_correlation(msg) or None`
fn correlation<'a>(record: Option<&'a str>, header: Option<&'a str>) -> Option<&'a str> {
    record
        .filter(|c| !c.is_empty())
        .or(header.filter(|c| !c.is_empty()))
}

impl Builder {
    pub fn for_kind(kind: &str) -> Option<Builder> {
        match kind {
            "delivery_receipt" => Some(Builder::Receipt),
            "profile_upsert" => Some(Builder::ProfileUpsert),
            "segment_membership_change" => Some(Builder::MembershipChange),
            _ => None,
        }
    }

    /// Every field of the reader version the builder was written for, in `build`'s order.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Builder::Receipt => RECEIPT_FIELDS,
            Builder::ProfileUpsert => PROFILE_FIELDS,
            Builder::MembershipChange => MEMBERSHIP_FIELDS,
        }
    }

    /// The fields of the records an array field holds, in the order `build` reads them.
    pub fn record_fields(self, field: &str) -> &'static [&'static str] {
        match (self, field) {
            (Builder::ProfileUpsert, "consents") => CONSENT_FIELDS,
            _ => &[],
        }
    }

    /// The prepared row, or None for the Python path.
    pub fn build(
        self,
        decoded: &Decoded<'_>,
        slots: &[usize],
        context: &Context<'_>,
    ) -> Option<Prepared> {
        match self {
            Builder::Receipt => receipt(decoded, slots, context),
            Builder::ProfileUpsert => profile(decoded, slots, context),
            Builder::MembershipChange => membership(decoded, slots, context),
        }
    }
}

fn receipt(decoded: &Decoded<'_>, slots: &[usize], context: &Context<'_>) -> Option<Prepared> {
    let field = |i: usize| &decoded.values[slots[i]];
    let (
        Some(Some(tenant)),
        Some(Some(delivery)),
        Some(Some(provider)),
        Some(provider_message_id),
        Some(Some(status)),
        Value::Long(occurred),
        Some(_destination), // never stored: a receipt row keeps no address (receipts.py)
        Some(channel),
        Some(response),
        Some(record_correlation),
    ) = (
        text(field(0)),
        text(field(1)),
        text(field(2)),
        text(field(3)),
        text(field(4)),
        field(5),
        text(field(6)),
        text(field(7)),
        decoded.canonical[slots[8]].as_deref(),
        text(field(9)),
    )
    else {
        return None;
    };
    let occurred = iso_utc(*occurred)?;
    let (tenant, delivery) = (uuid_text(tenant), uuid_text(delivery));
    let correlation = correlation(record_correlation, context.header_correlation);

    // receipt_fact_id: ["delivery_log", tenant, delivery, {the fact, keys sorted}]
    let mut fact = String::with_capacity(256 + response.len());
    fact.push_str("[\"delivery_log\",");
    quote(&mut fact, &tenant);
    fact.push(',');
    quote(&mut fact, &delivery);
    fact.push_str(",{\"channel\":");
    json_text(&mut fact, channel);
    if let Some(correlation) = correlation {
        fact.push_str(",\"correlation_id\":");
        quote(&mut fact, correlation);
    }
    fact.push_str(",\"destination\":null");
    fact.push_str(",\"fact\":\"receipt\",\"occurred_at\":");
    quote(&mut fact, &occurred);
    fact.push_str(",\"provider\":");
    quote(&mut fact, provider);
    fact.push_str(",\"provider_message_id\":");
    json_text(&mut fact, provider_message_id);
    fact.push_str(",\"provider_response\":");
    fact.push_str(response);
    fact.push_str(",\"status\":");
    quote(&mut fact, status);
    fact.push_str("}]");
    let fact_id = uuid::Uuid::new_v5(context.namespace, fact.as_bytes())
        .hyphenated()
        .to_string();

    let source = &context.source;
    let mut line = Line::new(fact.len() + 64);
    line.text(&tenant);
    line.text(&fact_id);
    line.text(&delivery);
    line.opt(channel);
    line.opt(None); // destination
    line.text(status);
    line.text(provider);
    line.opt(provider_message_id);
    line.text(response);
    line.text(&occurred);
    line.opt(correlation);
    line.text(source.topic);
    line.int(source.partition);
    line.int(source.offset);
    Some(Prepared {
        tenant,
        correlation: correlation.map(str::to_owned),
        line: line.finish(),
        key: Key::None,
    })
}

/// `canonical_json(consents_by_channel(facts))` of valid consent facts, or None when any fact
/// would poison the upsert (the Python path then words why).
fn consents(records: &[Vec<Value<'_>>], rules: &Rules) -> Option<String> {
    let mut by_channel: Vec<(&str, String)> = Vec::with_capacity(records.len());
    for record in records {
        let [Value::Str(channel), Value::Str(state), Value::Str(legal_basis), Value::Str(source), Value::Long(occurred)] =
            record.as_slice()
        else {
            return None;
        };
        let known = |list: &[String], value: &str| list.iter().any(|v| v == value);
        let fits =
            |text: &str| text.chars().count() <= rules.consent_max_text && !text.contains('\0');
        if !known(&rules.consent_channels, channel)
            || !known(&rules.consent_states, state)
            || by_channel.iter().any(|(c, _)| c == channel)
            || !fits(legal_basis)
            || !fits(source)
        {
            return None;
        }
        // the fact's keys in sorted order
        let mut fact = String::from("{\"legal_basis\":");
        quote(&mut fact, legal_basis);
        fact.push_str(",\"occurred_at\":");
        quote(&mut fact, &iso_utc(*occurred)?);
        fact.push_str(",\"source\":");
        quote(&mut fact, source);
        fact.push_str(",\"state\":");
        quote(&mut fact, state);
        fact.push('}');
        by_channel.push((channel, fact));
    }
    by_channel.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::from("{");
    comma_separated(&mut out, &by_channel, |out, (channel, fact)| {
        quote(out, channel);
        out.push(':');
        out.push_str(fact);
    });
    out.push('}');
    Some(out)
}

fn profile(decoded: &Decoded<'_>, slots: &[usize], context: &Context<'_>) -> Option<Prepared> {
    let field = |i: usize| &decoded.values[slots[i]];
    let (
        Some(Some(tenant)),
        Some(Some(profile)),
        Value::Long(version),
        Value::Long(occurred),
        Some(ext_id),
        Some(email),
        Some(mobile),
        Value::StrArray(labels),
        Some(push_token),
        Some(attributes),
        Value::Records(facts),
        Some(key_id),
        Some(record_correlation),
    ) = (
        text(field(0)),
        text(field(1)),
        field(2),
        field(3),
        text(field(4)),
        text(field(5)),
        text(field(6)),
        field(7),
        text(field(8)),
        decoded.canonical[slots[9]].as_deref(),
        field(10),
        text(field(11)),
        text(field(17)),
    )
    else {
        return None;
    };
    let mut sealed = Vec::with_capacity(SEALED.len());
    for i in SEALED {
        sealed.push(bytes(field(i))?);
    }
    // profile_changes.sealed_fields: a sealed field needs the key it is under, and a sealed
    // upsert carries no personal field in plaintext; the Python path words the refusal
    let plaintext = [ext_id, email, mobile, push_token]
        .iter()
        .any(Option::is_some);
    match key_id {
        None if sealed.iter().any(Option::is_some) => return None,
        Some(_) if plaintext || attributes != "{}" => return None,
        _ => {}
    }
    let key_id = key_id.map(uuid_text);
    // a NUL in a label is left for PostgreSQL to refuse on the Python path
    if labels.iter().any(|l| l.contains('\0')) {
        return None;
    }
    let (Some(occurred), Some(consents)) = (iso_utc(*occurred), consents(facts, context.rules))
    else {
        return None;
    };
    let mut labels = labels.clone();
    labels.sort_unstable();
    labels.dedup();

    // the content hash: canonical JSON of [ext_id, email, mobile, push_token, labels,
    // attributes, occurred_at], the consents when there are any, and for a sealed upsert
    // {"key_id": …, each sealed field by its plaintext's name: its hex}
    let mut content = String::with_capacity(128 + attributes.len() + consents.len());
    content.push('[');
    for value in [ext_id, email, mobile, push_token] {
        json_text(&mut content, value);
        content.push(',');
    }
    content.push('[');
    comma_separated(&mut content, &labels, |out, label| quote(out, label));
    content.push_str("],");
    content.push_str(attributes);
    content.push(',');
    quote(&mut content, &occurred);
    if consents != "{}" {
        content.push(',');
        content.push_str(&consents);
    }
    if let Some(key_id) = &key_id {
        let mut entries = vec![("key_id", key_id.clone())];
        for (i, value) in SEALED.zip(&sealed) {
            if let (Some(value), Some(name)) = (value, PROFILE_FIELDS[i].strip_suffix("_sealed")) {
                entries.push((name, hex(value)));
            }
        }
        entries.sort_unstable_by_key(|(name, _)| *name);
        content.push_str(",{");
        comma_separated(&mut content, &entries, |out, (name, value)| {
            quote(out, name);
            out.push(':');
            quote(out, value);
        });
        content.push('}');
    }
    content.push(']');
    let hash = Sha256::digest(content.as_bytes());

    let (tenant, profile) = (uuid_text(tenant), uuid_text(profile));
    let mut line = Line::new(content.len() + 128);
    line.text(&tenant);
    line.text(&profile);
    line.opt(ext_id);
    line.opt(email);
    line.opt(mobile);
    line.opt(push_token);
    line.array(&labels);
    line.text(attributes);
    line.int(*version);
    line.bytea(&hash);
    line.text(&occurred);
    line.text(&consents);
    line.opt(key_id.as_deref());
    for value in sealed {
        match value {
            Some(value) => line.bytea(value),
            None => line.opt(None),
        }
    }
    let correlation = correlation(record_correlation, context.header_correlation);
    Some(Prepared {
        tenant,
        correlation: correlation.map(str::to_owned),
        line: line.finish(),
        key: Key::Profile(profile, *version, hash.into()),
    })
}

fn membership(decoded: &Decoded<'_>, slots: &[usize], context: &Context<'_>) -> Option<Prepared> {
    let field = |i: usize| &decoded.values[slots[i]];
    let (
        Some(Some(tenant)),
        Some(Some(segment)),
        Value::Long(sequence),
        Some(Some(profile)),
        Some(Some(action)),
        Value::Long(occurred),
        profile_version,
        Some(record_correlation),
    ) = (
        text(field(0)),
        text(field(1)),
        field(2),
        text(field(3)),
        text(field(4)),
        field(5),
        field(6),
        text(field(7)),
    )
    else {
        return None;
    };
    let occurred = iso_utc(*occurred)?;
    let (tenant, profile) = (uuid_text(tenant), uuid_text(profile));
    let mut line = Line::new(128 + segment.len());
    line.text(&tenant);
    line.text(segment);
    line.int(*sequence);
    line.text(&profile);
    line.text(action);
    line.text(&occurred);
    match profile_version {
        Value::Long(version) => line.int(*version),
        Value::Null => line.opt(None),
        _ => return None,
    }
    let correlation = correlation(record_correlation, context.header_correlation);
    Some(Prepared {
        tenant,
        correlation: correlation.map(str::to_owned),
        line: line.finish(),
        key: Key::Membership(segment.to_string(), profile),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_escape_as_copy_text_reads_them() {
        let mut line = Line::new(0);
        line.text("a\tb\\c\nd\u{0b}");
        line.opt(None);
        line.int(-5);
        line.array(&["x", "y z", "", "NULL", "a\"b", "é"]);
        line.bytea(&[0, 255]);
        assert_eq!(
            String::from_utf8(line.finish()).unwrap(),
            "a\\tb\\\\c\\nd\\v\t\\N\t-5\t{x,\"y z\",\"\",\"NULL\",\"a\\\\\"b\",é}\t\\\\x00ff\n"
        );
    }
}
