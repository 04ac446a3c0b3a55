"""Wait until a Kafka broker is ready: an admin client can list topics (not merely an open port).

With AIMIS_KAFKA_SECURITY=scram it signs in as `admin` from AIMIS_KAFKA_CREDENTIALS (credentials.json).
"""

import asyncio
import json
import os
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient


async def ready(bootstrap: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, **_security())
        try:
            await admin.start()
            await admin.list_topics()
            return True
        except Exception:  # noqa: BLE001 - not up yet
            await asyncio.sleep(0.3)
        finally:
            await admin.close()
    return False


def _security() -> dict[str, str]:
    if os.environ.get("AIMIS_KAFKA_SECURITY", "none") != "scram":
        return {}
    with open(os.environ["AIMIS_KAFKA_CREDENTIALS"]) as f:
        password = json.load(f)["admin"]
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "admin", "sasl_plain_password": password}


if __name__ == "__main__":
    import logging

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    ok = asyncio.run(ready(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 60))
    if not ok:
        print(f"kafka at {sys.argv[1]} not ready", file=sys.stderr)
    sys.exit(0 if ok else 1)
