"""Creating the Kafka topics the services use, before they start (idempotent).

Brokers may auto-create a topic on first use, but with their default partition count; the
consumer groups need enough partitions to split between replicas, so topics are made here.
"""

from __future__ import annotations

from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

DEFAULT_PARTITIONS = 6


def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int = 1,
    timeout_ms: int = 10_000,
) -> list[str]:
    """Creates each topic in `names` that does not exist yet; returns the ones it created.

    A topic that exists is left as it is (its partition count is not changed), so calling
    this again, or from two processes at once, is harmless.
    """
    wanted = list(dict.fromkeys(names))  # unique, in the order given
    if not wanted:
        return []
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms
    )
    try:
        existing = set(admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if not missing:
            return []
        spec = {
            name: {"num_partitions": partitions, "replication_factor": replication_factor}
            for name in missing
        }
        response = admin.create_topics(spec, raise_errors=False)
        created = _created(response["topics"])
        # Accepted is not yet usable: wait until every partition has a leader, so that a
        # service started next does not find the topic missing.
        admin.wait_for_topics(missing, timeout_ms=timeout_ms)
        return created
    finally:
        admin.close()


def _created(results: list[dict[str, object]]) -> list[str]:
    """The names created; raises for any error other than "already exists" (which means
    another process created it between our listing and our request)."""
    created = []
    for result in results:
        code = int(result["error_code"])  # type: ignore[call-overload]
        if code == 0:
            created.append(str(result["name"]))
        elif code != TopicAlreadyExistsError.errno:
            raise KafkaError(
                f"could not create topic {result['name']!r}: "
                f"error {code} ({result.get('error_message')})"
            )
    return created
