"""Whatever arrives, the gateway answers without a server error (503 only, when Kafka is
away) and nothing it did not verify reaches a topic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from leo_activation.settings import Settings
from tests.fix_app import read_topic
from tests.test_gateway import KEYS, OTHER, TENANT, Call, Gateway, config_text, run_gateway

PROVIDERS = ("sendgrid", "twilio", "ses", "mailgun", "postmark", "zalo")
HEADERS = (
    "X-Twilio-Email-Event-Webhook-Signature",
    "X-Twilio-Email-Event-Webhook-Timestamp",
    "X-Twilio-Signature",
    "X-ZEvent-Signature",
    "Authorization",
    "Content-Type",
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
# shapes near the real ones, so parsing goes deep before the signature check refuses
shaped = st.fixed_dictionaries(
    {},
    optional={
        "Type": st.sampled_from(["Notification", "SubscriptionConfirmation", "x"]),
        "SignatureVersion": st.sampled_from(["1", "2", 3]),
        "Signature": st.text(max_size=30),
        "Message": st.text(max_size=30),
        "Timestamp": st.text(max_size=30),
        "signature": st.dictionaries(
            st.sampled_from(["timestamp", "token", "signature"]), json_values, max_size=3
        ),
        "event-data": json_values,
        "timestamp": json_values,
        "event_name": json_values,
        "RecordType": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()),
)


@pytest.fixture
def gateway(settings: Settings, tmp_path: Path) -> Iterator[Gateway]:
    with run_gateway(settings, config_text(KEYS, [TENANT, OTHER]), tmp_path) as g:
        yield g


requests = st.tuples(
    st.sampled_from(PROVIDERS),
    st.sampled_from([TENANT, OTHER, "not-a-uuid"]),
    st.sampled_from(["", "?leo_delivery_id=x&leo_sent_at=1", "?a=%ff"]),
    bodies,
    st.dictionaries(
        st.sampled_from(HEADERS),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(str.strip),
        max_size=4,
    ),
)


def test_arbitrary_requests_get_no_server_error_and_produce_nothing(
    gateway: Gateway, settings: Settings
) -> None:
    @hsettings(max_examples=300, deadline=None)
    @given(request=requests)
    def answered(request: tuple[str, str, str, bytes, dict[str, str]]) -> None:
        provider, tenant, query, body, headers = request
        answer = gateway.post(Call(f"/v1/{provider}/{tenant}{query}", body, headers))
        assert answer.status_code in (400, 401, 403, 404), answer.text

    answered()
    assert read_topic(settings, "receipts") == []
    assert read_topic(settings, "dead-letters") == []
