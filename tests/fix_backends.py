"""pytest plugin: the database backends a test runs against.

A test marked ``backends`` (a module's ``pytestmark``, or one test) that uses the ``stack``
fixture runs twice, as eventsourcing runs one behaviour suite against every backend: on the
single PostgreSQL of the session's stack (``[single]``) and on a Citus cluster (``[citus]``: a
coordinator and two workers, started from the embedded PostgreSQL in ``<repo>/.dev/test-citus``
and stopped at the end of the session if it started them). The Citus runs skip, saying why, where
the embedded PostgreSQL has no Citus (``scripts/bootstrap.sh`` installs one when ``../shared/citus``
is beside the repository). Everything else runs on the single server only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from leo_activation.dev import stack as devstack
from leo_activation.dev.stack import Endpoints
from tests.fix_stack import Stack, app_url

BACKENDS = ("single", "citus")
CITUS_HOME = Path(__file__).resolve().parent.parent / ".dev" / "test-citus"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("backends") and "stack" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this test: ``single`` unless the test is marked ``backends``."""
    return str(getattr(request, "param", "single"))


@pytest.fixture(scope="session")
def citus_coordinator() -> Iterator[str]:
    """The admin DSN of the test Citus cluster's coordinator (its ``leo`` database)."""
    if not devstack.citus_available():
        pytest.skip(
            "no Citus in the embedded PostgreSQL (a user's machine): the Citus backend runs where "
            "scripts/bootstrap.sh found ../shared/citus beside the repository"
        )
    started_here = not devstack.citus_running(CITUS_HOME)
    coordinator = devstack.start_citus(CITUS_HOME)
    try:
        yield coordinator
    finally:
        if started_here:
            devstack.stop_citus(CITUS_HOME)


@pytest.fixture(scope="session")
def stack(running_stack: Stack, backend: str, request: pytest.FixtureRequest) -> Endpoints:
    """Kafka and the database server of this test's backend."""
    if backend == "single":
        return running_stack.endpoints
    coordinator = request.getfixturevalue("citus_coordinator")
    return Endpoints(running_stack.endpoints.kafka_bootstrap, app_url(coordinator), coordinator)
