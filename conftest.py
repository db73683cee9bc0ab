"""Set before JAX starts: four CPU devices, so chain_method="parallel" really runs in parallel."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
