"""Suite-wide: every test runs offline unless it points the SDK at a local server itself.

A developer's own ANTHROPIC_API_KEY must never make the suite call Claude: removed here, before
any fixture builds settings or copies the environment into agent processes.
"""

import os

for _name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
    os.environ.pop(_name, None)
