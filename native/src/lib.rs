//! The per-message work of the input topics, done for a whole polled batch at once: single-object
//! Avro framing, contract validation, the deterministic ids and the COPY row of each message.
//!
//! Per message the answer is either the prepared row or `None`: "not sure, ask the Python path".
//! Every rejection is worded by the Python path, so error classes and reasons have one source;
//! the Python wrapper (`leo_activation.engine.native`) and its tests hold the two to the same
//! output.

mod avro;
mod canonical;
mod rows;

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use serde_json::Value as Json;

use avro::{Reader, Type, Value};
use canonical::Limits;

/// What validation checks of one field of the reader (newest) version.
struct Check {
    max_len: usize, // characters of a text, bytes of a bytes value
    is_json: bool,
    is_labels: bool,
}

struct ReaderField {
    name: String,
    ty: Type,
    default: Option<Json>,
    check: Check,
}

/// One shipped writer version of a message type the native path prepares rows for.
struct Version {
    topic: String,
    kind: String,
    writer: Vec<(Type, Option<usize>)>, // each writer field, and its reader slot (None: dropped)
    reader: Vec<ReaderField>,
    row: rows::Builder,
    slots: Vec<usize>, // the reader slots of the builder's fields, in its order
}

#[pyclass(frozen, module = "leo_native")]
struct Decoder {
    versions: HashMap<[u8; 8], Version>,
    limits: Limits,
    label_max: usize,
    namespace: uuid::Uuid,
    rules: rows::Rules,
}

/// A decoded message, every reader field in its slot, JSON text fields in canonical form.
pub struct Decoded<'a> {
    pub values: Vec<Value<'a>>,
    pub canonical: Vec<Option<String>>,
}

fn schema_fields(schema: &str) -> PyResult<Vec<Json>> {
    let parsed: Json = serde_json::from_str(schema)
        .map_err(|e| PyValueError::new_err(format!("schema is not JSON: {e}")))?;
    match parsed.get("fields") {
        Some(Json::Array(fields)) => Ok(fields.clone()),
        _ => Err(PyValueError::new_err("schema has no fields")),
    }
}

fn field_name(field: &Json) -> PyResult<&str> {
    field
        .get("name")
        .and_then(Json::as_str)
        .ok_or_else(|| PyValueError::new_err("a schema field has no name"))
}

impl Version {
    /// The version, or None when it is outside what the native path decodes (the Python path
    /// then decodes all its messages).
    fn new(
        topic: String,
        kind: String,
        writer_schema: &str,
        reader_schema: &str,
        checks: &HashMap<String, (usize, bool, bool)>,
    ) -> PyResult<Option<Version>> {
        let Some(row) = rows::Builder::for_kind(&kind) else {
            return Ok(None);
        };
        let mut reader = Vec::new();
        for field in schema_fields(reader_schema)? {
            let name = field_name(&field)?.to_owned();
            let Some(ty) = field.get("type").and_then(Type::parse) else {
                return Ok(None);
            };
            let (max_len, is_json, is_labels) =
                checks.get(&name).copied().unwrap_or((0, false, false));
            let default = field.get("default").cloned();
            let check = Check {
                max_len,
                is_json,
                is_labels,
            };
            reader.push(ReaderField {
                name,
                ty,
                default,
                check,
            });
        }
        let mut writer = Vec::new();
        let mut filled = vec![false; reader.len()];
        for field in schema_fields(writer_schema)? {
            let name = field_name(&field)?;
            let Some(ty) = field.get("type").and_then(Type::parse) else {
                return Ok(None);
            };
            let slot = reader.iter().position(|r| r.name == name);
            if let Some(slot) = slot {
                if !ty.resolves_to(&reader[slot].ty) {
                    return Ok(None); // a promotion the native path does not resolve
                }
                filled[slot] = true;
            }
            writer.push((ty, slot));
        }
        // a reader field the writer lacks takes its default, which must be one it can stand for
        for (field, filled) in reader.iter().zip(&filled) {
            let usable = field
                .default
                .as_ref()
                .and_then(|d| field.ty.default_value(d));
            if !filled && usable.is_none() {
                return Ok(None);
            }
        }
        // a reader with fields the builder was not written for: its rows may hold them
        if reader.len() != row.fields().len() {
            return Ok(None);
        }
        let mut slots = Vec::new();
        for name in row.fields() {
            let Some(slot) = reader.iter().position(|r| r.name == *name) else {
                return Ok(None);
            };
            if let Type::RecordArray(fields) = &reader[slot].ty {
                let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
                if names != row.record_fields(name) {
                    return Ok(None);
                }
            }
            slots.push(slot);
        }
        Ok(Some(Version {
            topic,
            kind,
            writer,
            reader,
            row,
            slots,
        }))
    }

    fn decode<'a>(
        &'a self,
        body: &'a [u8],
        limits: Limits,
        label_max: usize,
    ) -> Option<Decoded<'a>> {
        let mut values: Vec<Value<'a>> = self
            .reader
            .iter()
            .map(|f| {
                f.default
                    .as_ref()
                    .and_then(|d| f.ty.default_value(d))
                    .unwrap_or(Value::Null)
            })
            .collect();
        let mut reader = Reader::new(body);
        for (ty, slot) in &self.writer {
            let value = reader.value(ty)?;
            if let Some(slot) = slot {
                if !self.reader[*slot].ty.holds(&value) {
                    return None; // an enum symbol the reader does not know
                }
                values[*slot] = value;
            }
        }
        if !reader.at_end() {
            return None;
        }
        let mut canonical = vec![None; values.len()];
        for ((field, value), canonical) in self.reader.iter().zip(&values).zip(&mut canonical) {
            match value {
                Value::Str(text) if field.ty != Type::Uuid => {
                    if text.contains('\0') || text.chars().count() > field.check.max_len {
                        return None;
                    }
                    if field.check.is_json {
                        // a receipt's provider_response keeps no address (receipts.py)
                        let redact = field.name == "provider_response";
                        *canonical = Some(canonical::canonical_object(text, limits, redact)?);
                    }
                }
                // a sealed field: its length in bytes (contracts.validate)
                Value::Bytes(bytes) if bytes.len() > field.check.max_len => return None,
                Value::StrArray(labels)
                    if field.check.is_labels
                        && labels.iter().any(|l| l.chars().count() > label_max) =>
                {
                    return None;
                }
                _ => {}
            }
        }
        Some(Decoded { values, canonical })
    }
}

#[pymethods]
impl Decoder {
    /// `versions`: (fingerprint, logical topic, kind, writer schema JSON, reader schema JSON) of
    /// every shipped version; `checks`: per field name of a reader version, (longest text,
    /// JSON object text?, data labels?); `consent_channels`, `consent_states`: what a profile's
    /// consent fact may name.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        versions: Vec<(Vec<u8>, String, String, String, String)>,
        checks: HashMap<String, HashMap<String, (usize, bool, bool)>>,
        max_depth: usize,
        max_int_digits: usize,
        label_max: usize,
        namespace: Vec<u8>,
        consent_channels: Vec<String>,
        consent_states: Vec<String>,
    ) -> PyResult<Self> {
        let namespace = uuid::Uuid::from_slice(&namespace)
            .map_err(|e| PyValueError::new_err(format!("namespace: {e}")))?;
        let mut by_fingerprint = HashMap::new();
        let none = HashMap::new();
        for (fingerprint, topic, kind, writer, reader) in versions {
            let fingerprint: [u8; 8] = fingerprint
                .try_into()
                .map_err(|_| PyValueError::new_err("a fingerprint is 8 bytes"))?;
            let kind_checks = checks.get(&kind).unwrap_or(&none);
            if let Some(v) = Version::new(topic, kind, &writer, &reader, kind_checks)? {
                by_fingerprint.insert(fingerprint, v);
            }
        }
        Ok(Decoder {
            versions: by_fingerprint,
            limits: Limits {
                max_depth,
                max_int_digits,
            },
            label_max,
            namespace,
            rules: rows::Rules {
                consent_channels,
                consent_states,
                consent_max_text: label_max,
            },
        })
    }

    /// The kinds whose messages this decoder prepares.
    fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.versions.values().map(|v| v.kind.clone()).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// Per message `(kind, tenant text, correlation id, COPY line, row key)`, or None for the
    /// Python path. The lists run in parallel: logical topic, value, partition, offset, and the
    /// correlation id of its headers. The messages are decoded with the interpreter released
    /// (the apply thread's Python runs meanwhile); only the answers are made with it.
    fn prepare<'py>(
        &self,
        py: Python<'py>,
        topics: Vec<Bound<'py, PyString>>,
        values: Vec<Option<Bound<'py, PyBytes>>>,
        partitions: Vec<i64>,
        offsets: Vec<i64>,
        header_correlations: Vec<Option<String>>,
    ) -> PyResult<Vec<Option<Bound<'py, PyTuple>>>> {
        let n = topics.len();
        if [
            values.len(),
            partitions.len(),
            offsets.len(),
            header_correlations.len(),
        ] != [n; 4]
        {
            return Err(PyValueError::new_err(
                "the lists of a batch differ in length",
            ));
        }
        let mut inputs = Vec::with_capacity(n);
        for i in 0..n {
            let value = values[i].as_ref().map(|v| v.as_bytes().to_vec());
            inputs.push((topics[i].to_str()?.to_owned(), value));
        }
        let prepared: Vec<Option<(&Version, rows::Prepared)>> = py.detach(|| {
            inputs
                .iter()
                .enumerate()
                .map(|(i, (topic, value))| {
                    self.prepare_one(
                        topic,
                        value.as_deref()?,
                        (partitions[i], offsets[i]),
                        header_correlations[i].as_deref(),
                    )
                })
                .collect()
        });
        prepared
            .into_iter()
            .map(|p| {
                p.map(|(version, row)| answer(py, &version.kind, row))
                    .transpose()
            })
            .collect()
    }
}

/// `(kind, tenant text, correlation id, COPY line, row key)` of a prepared row.
fn answer<'py>(py: Python<'py>, kind: &str, row: rows::Prepared) -> PyResult<Bound<'py, PyTuple>> {
    let correlation = match &row.correlation {
        Some(c) => PyString::new(py, c).into_any(),
        None => py.None().into_bound(py),
    };
    let key = match row.key {
        rows::Key::None => py.None().into_bound(py),
        rows::Key::Profile(profile, version, hash) => PyTuple::new(
            py,
            [
                PyString::new(py, &profile).into_any(),
                version.into_pyobject(py)?.into_any(),
                PyBytes::new(py, &hash).into_any(),
            ],
        )?
        .into_any(),
        rows::Key::Membership(segment, profile) => PyTuple::new(
            py,
            [PyString::new(py, &segment), PyString::new(py, &profile)],
        )?
        .into_any(),
    };
    PyTuple::new(
        py,
        [
            PyString::new(py, kind).into_any(),
            PyString::new(py, &row.tenant).into_any(),
            correlation,
            PyBytes::new(py, &row.line).into_any(),
            key,
        ],
    )
}

impl Decoder {
    fn prepare_one(
        &self,
        topic: &str,
        data: &[u8],
        coords: (i64, i64),
        header_correlation: Option<&str>,
    ) -> Option<(&Version, rows::Prepared)> {
        if data.len() < 10 || data[..2] != [0xc3, 0x01] {
            return None;
        }
        let fingerprint: [u8; 8] = data[2..10].try_into().expect("eight bytes");
        let version = self.versions.get(&fingerprint)?;
        if version.topic != topic {
            return None;
        }
        let decoded = version.decode(&data[10..], self.limits, self.label_max)?;
        let context = rows::Context {
            source: rows::Source {
                topic,
                partition: coords.0,
                offset: coords.1,
            },
            header_correlation,
            namespace: &self.namespace,
            rules: &self.rules,
        };
        let row = version.row.build(&decoded, &version.slots, &context)?;
        Some((version, row))
    }
}

#[pymodule]
fn leo_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Decoder>()?;
    Ok(())
}
