"""FusionCompute VRM REST client: session, typed models, typed errors, data transport."""

from .client import INSECURE_WARNING, MAX_BODY, PAGE_LIMIT, VrmClient, gather_limited
from .credentials import CredentialsError, SecretRedactingFilter, install_log_redaction, redact, resolve_password
from .errors import (BackupResourceError, TaskFailedError, TaskTimeoutError, VrmApiError, VrmAuthError,
                     VrmBodyTooLargeError, VrmConflictError, VrmConnectionError, VrmError, VrmNotFoundError, VrmProtocolError,
                     VrmServerError, VrmTimeoutError, VrmVersionError)
from .models import (BackupResource, CbtBitmap, Cluster, Datastore, Disk, Host, LoginInfo, Nic, OsCatalogue,
                     OsOptions, OsVersion, Site, SnapshotDetail, SnapshotNode, SnapshotTree, Task, TaskRef,
                     VersionInfo, Vm, VolSnapshot, Volume)
from .transport import BlockTransport, HttpResourceTransport
from .urn import last_segment, site_uri, uri_to_urn, urn_to_uri

__all__ = [
    "VrmClient", "INSECURE_WARNING", "MAX_BODY", "PAGE_LIMIT", "gather_limited",
    "resolve_password", "CredentialsError", "SecretRedactingFilter", "install_log_redaction", "redact",
    "VrmError", "VrmApiError", "VrmAuthError", "VrmNotFoundError", "VrmConflictError", "VrmServerError",
    "VrmVersionError", "VrmConnectionError", "VrmTimeoutError", "VrmProtocolError", "VrmBodyTooLargeError", "TaskFailedError",
    "TaskTimeoutError", "BackupResourceError",
    "BackupResource", "CbtBitmap", "Cluster", "Datastore", "Disk", "Host", "LoginInfo", "Nic", "OsCatalogue",
    "OsOptions", "OsVersion", "Site", "SnapshotDetail", "SnapshotNode", "SnapshotTree", "Task", "TaskRef",
    "VersionInfo", "Vm", "VolSnapshot", "Volume",
    "BlockTransport", "HttpResourceTransport",
    "urn_to_uri", "uri_to_urn", "site_uri", "last_segment",
]
