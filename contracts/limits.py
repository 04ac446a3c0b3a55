"""Input limits of SPEC 7.1 as reusable pydantic types, for HTTP bodies and Kafka records alike.

Strings that name or reference something (ids, org ids, references, inspection and site ids,
attribute keys and values) contain no control characters (U+0000-U+001F, U+007F) and no unpaired
surrogates (pydantic refuses those for every `str`); ids and references are at most 128 characters;
`attributes` at most 32 entries, keys at most 64, values at most 256. Event times are not before
2000-01-01 (the upper bound, now + 5 minutes, is the usage rule TIME_IN_FUTURE).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import AwareDatetime, Field, StringConstraints

NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
MAX_ID, MAX_ATTRIBUTES, MAX_ATTR_KEY, MAX_ATTR_VALUE = 128, 32, 64, 256
MAX_JSON_DEPTH = 32
MAX_BODY_BYTES = 1024 * 1024
MAX_USAGE_RECORD_BYTES = 64 * 1024  # one usage record (SPEC 7.1); in binary mode its headers count too
MIN_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)

SafeStr = Annotated[str, StringConstraints(pattern=NO_CONTROL)]
Id128 = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID, pattern=NO_CONTROL)]
Ref128 = Id128  # references (agreement, payment) follow the id rule
AttrKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ATTR_KEY, pattern=NO_CONTROL)]
AttrValue = Annotated[str, StringConstraints(max_length=MAX_ATTR_VALUE, pattern=NO_CONTROL)]
Attributes = Annotated[dict[AttrKey, AttrValue], Field(max_length=MAX_ATTRIBUTES)]


# The last instant a datetime can hold, in UTC: a time with an offset that puts it beyond (9999-12-31
# at -01:00) does not exist in UTC, and neither does year 1 at +01:00 (before MIN_TIME anyway).
LAST_UTC = datetime.max.replace(tzinfo=timezone.utc)

# An event's time (every record's envelope): from 2000 on, and one that exists in UTC. Checked by
# pydantic's own constraints, compared as instants (a Python validator per record cost as much as
# the rest of the envelope's checks: issue 13). Usage after now + 5 minutes is TIME_IN_FUTURE.
EventTime = Annotated[AwareDatetime, Field(ge=MIN_TIME, le=LAST_UTC)]

MAX_TIME = datetime(3000, 1, 1, tzinfo=timezone.utc)


# A time inside an event's data (paid_at, occurred_at, expires_at...): from 2000 and before 3000, so
# every sum a consumer makes with it (a grace period, a licence term) stays a valid datetime. Checked
# by pydantic's own constraints (compared as instants, so an offset cannot carry a time across a
# bound): every deduction request and ledger entry has such times, and a Python validator per field
# cost three times the parse (issue 13).
DataTime = Annotated[AwareDatetime, Field(ge=MIN_TIME, lt=MAX_TIME)]
