"""Settings are validated when built: a bad value is one SettingsError naming the variable, the
value and what is allowed; secrets never show in repr, str or a JSON dump."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leo_activation.settings import (
    Settings,
    SettingsError,
    dsn_host,
    env_name,
    from_env,
    is_secret_property,
    mask_dsn,
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LEO_BATCH_SIZE": "0"}, "LEO_BATCH_SIZE='0': expected an integer from 1 to 100000"),
        ({"LEO_BATCH_SIZE": "2000000"}, "LEO_BATCH_SIZE='2000000'"),
        ({"LEO_BATCH_SIZE": "five"}, "LEO_BATCH_SIZE='five'"),
        ({"LEO_BATCH_TIMEOUT_S": "abc"}, "LEO_BATCH_TIMEOUT_S='abc': expected a number of sec"),
        ({"LEO_BATCH_TIMEOUT_S": "0"}, "LEO_BATCH_TIMEOUT_S='0'"),
        ({"LEO_BATCH_TIMEOUT_S": "inf"}, "LEO_BATCH_TIMEOUT_S='inf'"),
        ({"LEO_TENANTS_AT_ONCE": "0"}, "LEO_TENANTS_AT_ONCE='0': expected an integer from 1 to 64"),
        ({"LEO_TENANTS_AT_ONCE": "65"}, "LEO_TENANTS_AT_ONCE='65'"),
        ({"LEO_METRICS_PORT": "0"}, "LEO_METRICS_PORT='0': expected a TCP port"),
        ({"LEO_METRICS_PORT": "65536"}, "LEO_METRICS_PORT='65536'"),
        ({"LEO_TOPIC_PARTITIONS": "0"}, "LEO_TOPIC_PARTITIONS='0'"),
        ({"LEO_TOPIC_REPLICATION_FACTOR": "0"}, "LEO_TOPIC_REPLICATION_FACTOR='0'"),
        (
            {"LEO_TOPIC_REPLICATION_FACTOR": "1", "LEO_TOPIC_MIN_INSYNC_REPLICAS": "2"},
            "LEO_TOPIC_MIN_INSYNC_REPLICAS: 2 is more than LEO_TOPIC_REPLICATION_FACTOR=1",
        ),
        ({"LEO_KAFKA_STARTUP_TIMEOUT_S": "-1"}, "LEO_KAFKA_STARTUP_TIMEOUT_S='-1'"),
        ({"LEO_KAFKA_SECURITY_PROTOCOL": "TLS"}, "LEO_KAFKA_SECURITY_PROTOCOL='TLS': expected "),
        ({"LEO_KAFKA_SASL_MECHANISM": "GSSAPI"}, "LEO_KAFKA_SASL_MECHANISM='GSSAPI'"),
        ({"LEO_KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.pem"}, "expected an existing file"),
        ({"LEO_KAFKA_CONFIG": "/nonexistent.properties"}, "LEO_KAFKA_CONFIG='/nonexistent"),
        ({"LEO_LOG_FORMAT": "xml"}, "LEO_LOG_FORMAT='xml': expected auto, text or json"),
        ({"LEO_LOG_LEVEL": "loud"}, "LEO_LOG_LEVEL='loud'"),
        ({"LEO_TOPIC_PREFIX": "my topics."}, "LEO_TOPIC_PREFIX='my topics.'"),
        ({"LEO_GROUP_ID": ""}, None),  # empty means unset: the default group
        ({"LEO_PROGRESS_INTERVAL_S": "0"}, "LEO_PROGRESS_INTERVAL_S='0'"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(env: dict[str, str], expected: str | None) -> None:
    if expected is None:
        from_env(env)
        return
    with pytest.raises(SettingsError) as raised:
        from_env(env)
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message


def test_a_bad_flag_is_reported_under_the_flag() -> None:
    with pytest.raises(SettingsError, match=r"^--batch-size=-5: expected an integer from 1 to"):
        from_env({}, batch_size=-5)
    with pytest.raises(SettingsError, match=r"^--metrics-port=99999: "):
        from_env({}).with_overrides(metrics_port=99999)
    with pytest.raises(SettingsError, match=r"^--bootstrap="):
        from_env({}, kafka_bootstrap=7)


def test_flags_win_over_the_environment_and_none_means_not_given() -> None:
    settings = from_env({"LEO_BATCH_SIZE": "10", "LEO_GROUP_ID": "g"}, batch_size=20, group_id=None)
    assert (settings.batch_size, settings.group_id) == (20, "g")


def test_built_in_process_the_environment_fills_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEO_TOPIC_PARTITIONS", "3")
    monkeypatch.setenv("LEO_BATCH_SIZE", "9")
    settings = Settings(batch_size=500)
    assert (settings.topic_partitions, settings.batch_size) == (3, 500)
    assert settings.with_overrides(group_id="x").topic_partitions == 3


def test_with_overrides_validates_and_keeps_the_rest() -> None:
    settings = Settings(database_url="postgresql://a:b@h/d", batch_size=7)
    copy = settings.with_overrides(batch_size=8, metrics_port=None)
    assert (copy.batch_size, copy.database_url) == (8, settings.database_url)
    assert copy.metrics_port is None
    with pytest.raises(SettingsError):
        settings.with_overrides(batch_timeout_s=0)
    with pytest.raises(SettingsError, match="unknown_field"):
        settings.with_overrides(unknown_field=1)


def test_empty_variables_mean_unset() -> None:
    settings = from_env({"LEO_BATCH_SIZE": "", "LEO_KAFKA_BOOTSTRAP": ""})
    assert settings.batch_size == 5000
    assert settings.kafka_bootstrap is None


def test_log_level_is_case_insensitive() -> None:
    assert from_env({"LEO_LOG_LEVEL": "debug"}).log_level == "DEBUG"


# an environment-variable-safe property name: lower-case words joined by "_"
PROPERTY = st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=8), min_size=1,
                    max_size=4).map("_".join)  # fmt: skip


@given(name=PROPERTY, value=st.text(string.printable.strip(), min_size=1, max_size=20))
def test_every_leo_kafka_variable_maps_to_its_librdkafka_property(name: str, value: str) -> None:
    settings = from_env({f"LEO_KAFKA__{name.upper()}": value})
    assert settings.extra_kafka == {name.replace("_", "."): value}


def test_the_properties_file_comes_under_the_variables(tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text("# librdkafka\nclient.id=from-file\nsocket.timeout.ms = 5000\n")
    settings = from_env({"LEO_KAFKA_CONFIG": str(props), "LEO_KAFKA__CLIENT_ID": "from-env"})
    assert settings.extra_kafka == {"client.id": "from-env", "socket.timeout.ms": "5000"}
    assert settings.with_overrides(batch_size=1).extra_kafka == settings.extra_kafka


def test_a_malformed_properties_file_is_one_line(tmp_path: Path) -> None:
    props = tmp_path / "bad.properties"
    props.write_text("a=b\n\\u12")
    with pytest.raises(SettingsError, match=r"^LEO_KAFKA_CONFIG: .* is not a properties file"):
        from_env({"LEO_KAFKA_CONFIG": str(props)})


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("sasl.password", True),
        ("ssl.key.password", True),
        ("sasl.oauthbearer.client.secret", True),
        ("sasl.oauthbearer.config", True),
        ("ssl.key.pem", True),
        ("ssl.key.location", False),
        ("client.id", False),
        ("sasl.username", False),
    ],
)
def test_which_kafka_properties_are_secret(key: str, secret: bool) -> None:
    assert is_secret_property(key) is secret


SECRET = st.text(string.ascii_letters + string.digits + "!#%+,-.;<>?^_~", min_size=8, max_size=30)


def secret_settings(secret: str) -> Settings:
    return from_env(
        {
            "LEO_KAFKA_SASL_PASSWORD": secret,
            "LEO_KAFKA_SSL_KEY_PASSWORD": secret,
            "LEO_SCHEMA_REGISTRY_PASSWORD": secret,
            "LEO_KAFKA__SASL_OAUTHBEARER_CONFIG": secret,
            "LEO_KAFKA__SASL_OAUTHBEARER_CLIENT_SECRET": secret,
            "LEO_DATABASE_URL": f"postgresql://app:{secret}@db.example:5432/leo",
            "LEO_ADMIN_DATABASE_URL": f"host=db.example user=leo password={secret}",
            "LEO_SCHEMA_REGISTRY_URL": f"https://sr:{secret}@registry.example",
        }
    )


def shown(settings: Settings) -> tuple[str, ...]:
    return (repr(settings), str(settings), settings.model_dump_json())


# What the settings show whatever the secret is (field names, defaults, hosts): a secret that is a
# piece of that text cannot be told apart from it ("admin_da" is in "admin_database_url").
PUBLIC_TEXT = " ".join(shown(secret_settings("*")))


@given(secret=SECRET.filter(lambda secret: secret not in PUBLIC_TEXT))
def test_no_secret_shows_in_repr_str_or_json(secret: str) -> None:
    settings = secret_settings(secret)
    for text in shown(settings):
        assert secret not in text
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == secret
    assert settings.database_url == f"postgresql://app:{secret}@db.example:5432/leo"


@given(secret=SECRET)
def test_a_bad_secret_is_not_echoed(secret: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings(kafka_sasl_password=[secret])
    assert secret not in str(raised.value)
    assert "LEO_KAFKA_SASL_PASSWORD=***" in str(raised.value)


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://app:pw@h:5432/db", "postgresql://app:***@h:5432/db"),
        ("postgresql://app@h/db", "postgresql://app@h/db"),
        (
            "postgresql://app:p%40w@h/db?sslmode=require",
            "postgresql://app:***@h/db?sslmode=require",
        ),
        ("postgresql://h/db?user=a&password=pw", "postgresql://h/db?user=a&password=***"),
        ("host=h password=pw dbname=d", "host=h password=*** dbname=d"),
        ("host=h password='p w' dbname=d", "host=h password=*** dbname=d"),
        (None, None),
    ],
)
def test_mask_dsn(dsn: str | None, masked: str | None) -> None:
    assert mask_dsn(dsn) == masked


def test_dsn_host_names_where_not_who() -> None:
    assert dsn_host("postgresql://app:pw@db.example:6432/leo") == "db.example:6432/leo"
    assert dsn_host("dbname=leo") == "localhost:5432/leo"
    assert dsn_host("not a dsn ===") is None
    assert re.fullmatch(r"[^:]*:\d+/\w*", dsn_host("postgresql:///x") or "")


def test_the_readme_documents_every_variable() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme[readme.index("## Configuration") : readme.index("## Topics and message")]
    missing = [
        env_name(field)
        for field in Settings.model_fields
        if field not in ("extra_kafka", "output_prefix") and f"`{env_name(field)}`" not in table
    ]
    assert not missing, missing


def test_output_prefix_is_no_variable() -> None:
    assert from_env({"LEO_OUTPUT_PREFIX": "elsewhere."}).output_prefix is None
