//! The COPY rows of the message types prepared natively, as their handlers' `prepare` builds
//! them (`leo_activation.consumers.receipts.receipt_row`).

use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use crate::avro::{iso_utc, uuid_text, Value};
use crate::canonical::quote;
use crate::Decoded;

/// Where a message came from: the last columns of its row.
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i64,
    pub offset: i64,
}

#[derive(Clone, Copy)]
pub enum Builder {
    Receipt,
}

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

fn text<'a>(value: &Value<'a>) -> Option<Option<&'a str>> {
    match value {
        Value::Null => Some(None),
        Value::Str(text) => Some(Some(text)),
        _ => None,
    }
}

fn json_text(out: &mut String, value: Option<&str>) {
    match value {
        None => out.push_str("null"),
        Some(text) => quote(out, text),
    }
}

fn py_text<'py>(py: Python<'py>, value: Option<&str>) -> Bound<'py, PyAny> {
    match value {
        None => py.None().into_bound(py),
        Some(text) => PyString::new(py, text).into_any(),
    }
}

impl Builder {
    pub fn for_kind(kind: &str) -> Option<Builder> {
        match kind {
            "delivery_receipt" => Some(Builder::Receipt),
            _ => None,
        }
    }

    /// The reader fields the row is made of, in the order `build` takes their slots.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Builder::Receipt => RECEIPT_FIELDS,
        }
    }

    /// `(kind, tenant text, correlation id, row)`, or None for the Python path.
    #[allow(clippy::too_many_arguments)]
    pub fn build<'py>(
        self,
        py: Python<'py>,
        kind: &str,
        decoded: &Decoded<'_>,
        slots: &[usize],
        source: &Source<'_>,
        header_correlation: Option<&str>,
        namespace: &uuid::Uuid,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        match self {
            Builder::Receipt => receipt(
                py,
                kind,
                decoded,
                slots,
                source,
                header_correlation,
                namespace,
            ),
        }
    }
}

fn receipt<'py>(
    py: Python<'py>,
    kind: &str,
    decoded: &Decoded<'_>,
    slots: &[usize],
    source: &Source<'_>,
    header_correlation: Option<&str>,
    namespace: &uuid::Uuid,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
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
        return Ok(None);
    };
    let Some(occurred) = iso_utc(*occurred) else {
        return Ok(None);
    };
    let (tenant, delivery) = (uuid_text(tenant), uuid_text(delivery));
    // `record.get("correlation_id") or header_correlation(msg) or None`
    let correlation = record_correlation
        .filter(|c| !c.is_empty())
        .or(header_correlation.filter(|c| !c.is_empty()));

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
    let fact_id = uuid::Uuid::new_v5(namespace, fact.as_bytes())
        .hyphenated()
        .to_string();

    let tenant_py = PyString::new(py, &tenant).into_any();
    let correlation_py = py_text(py, correlation);
    let row = PyTuple::new(
        py,
        [
            tenant_py.clone(),
            PyString::new(py, &fact_id).into_any(),
            PyString::new(py, &delivery).into_any(),
            py_text(py, channel),
            py_text(py, None),
            PyString::new(py, status).into_any(),
            PyString::new(py, provider).into_any(),
            py_text(py, provider_message_id),
            PyString::new(py, response).into_any(),
            PyString::new(py, &occurred).into_any(),
            correlation_py.clone(),
            PyString::new(py, source.topic).into_any(),
            source.partition.into_pyobject(py)?.into_any(),
            source.offset.into_pyobject(py)?.into_any(),
        ],
    )?;
    let prepared = PyTuple::new(
        py,
        [
            PyString::new(py, kind).into_any(),
            tenant_py,
            correlation_py,
            row.into_any(),
        ],
    )?;
    Ok(Some(prepared))
}
