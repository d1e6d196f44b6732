"""Imports every table so that `Base.metadata` is complete (for Alembic and tests)."""

from registry.audit_log import models as _audit_reviews  # noqa: F401
from registry.aefi import models as _aefi  # noqa: F401
from registry.bulk import models as _bulk  # noqa: F401
from registry.citizens import models as _citizens  # noqa: F401
from registry.console_sessions import models as _console_sessions  # noqa: F401
from registry.certificates import models as _certificates  # noqa: F401
from registry.facilities import models as _facilities  # noqa: F401
from registry.immunizations import models as _immunizations  # noqa: F401
from registry.jurisdictions import models as _jurisdictions  # noqa: F401
from registry.linkage import models as _linkage  # noqa: F401
from registry.linkage import merge_models as _linkage_merges  # noqa: F401
from registry.linkage import match_models as _linkage_match  # noqa: F401
from registry.linkage import node_link_models as _linkage_nodes  # noqa: F401
from registry.nodes import models as _nodes  # noqa: F401
from registry.patients import models as _patients  # noqa: F401
from registry import rate_limit as _rate_limit  # noqa: F401
from registry.reports import models as _reports  # noqa: F401
from registry.schedules import models as _schedules  # noqa: F401
from registry.sync import models as _sync  # noqa: F401
from registry.users import models as _users  # noqa: F401
from security.audit import models as _audit  # noqa: F401
from security.crypto import data_keys as _data_keys  # noqa: F401
from security.orm import Base
from security import throttle as _throttle  # noqa: F401

metadata = Base.metadata
