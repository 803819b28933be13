"""Values of EVerest's ``entrypoint`` API 1.0.0 (discovery of the API modules), as attrs classes.

Field names are the wire names. Every object of the document allows additional properties, and this
package's models ignore unknown keys (see :func:`evflow.runtime.codec.is_wire_model`). The integers are
``int32_t`` in EVerest's types (``everest_api_types/entrypoint/API.hpp``): a value outside that range
could not have come from EVerest, so it cannot exist here either.
"""

from __future__ import annotations

import attrs

from .validators import int_range

I32_MIN = -(2**31)
I32_MAX = 2**31 - 1

_optional_i32 = attrs.validators.optional(int_range(I32_MIN, I32_MAX))


@attrs.frozen(kw_only=True)
class CommunicationParameters:
    """How EVerest watches the link to a client of this API. Each figure is optional (EVerest's modules
    leave ``request_reply_timeout_s`` out when they have none)."""

    # Period of EVerest's heartbeat to the client.
    heartbeat_period_ms: int | None = attrs.field(default=None, validator=_optional_i32)
    # Longest interval EVerest expects between the client's communication checks.
    communication_check_period_s: int | None = attrs.field(default=None, validator=_optional_i32)
    # How long the client has to answer a request from EVerest.
    request_reply_timeout_s: int | None = attrs.field(default=None, validator=_optional_i32)


@attrs.frozen(kw_only=True)
class ApiParameter:
    """One API that one module implements: its topics are ``everest_api/{version}/{type}/{module_id}/…``."""

    type: str
    module_id: str
    version: int = attrs.field(validator=int_range(I32_MIN, I32_MAX))
    communication_monitoring: CommunicationParameters | None = None


@attrs.frozen(kw_only=True)
class ApiDiscoverResponse:
    """One module's answer to ``discover`` or ``query-modules/<type>``: the APIs it implements (every one
    for discover, the asked type's for query-modules)."""

    apis: tuple[ApiParameter, ...]
