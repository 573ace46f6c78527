"""InfraValidator before the Pusher: a local model-server subprocess, or the standard one on Kubernetes."""

from components.infra_validator.component import (  # noqa: F401
    LocalInfraValidator,
    local_infra_validator,
    request_spec,
    standard_infra_validator,
)
