"""Wait until a Kafka broker is ready: an admin client can list topics (not merely an open port)."""

import asyncio
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient


async def ready(bootstrap: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return True
        except Exception:  # noqa: BLE001 - not up yet
            await asyncio.sleep(0.3)
        finally:
            await admin.close()
    return False


if __name__ == "__main__":
    import logging

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    ok = asyncio.run(ready(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 60))
    if not ok:
        print(f"kafka at {sys.argv[1]} not ready", file=sys.stderr)
    sys.exit(0 if ok else 1)
