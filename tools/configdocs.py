"""Print the settings reference tables that docs/configuration.md must contain.

`python tools/configdocs.py` prints them; tests/test_docs.py fails when the doc has drifted.
"""

from __future__ import annotations

from vpsmon.collector.config import ENV_PREFIX as COLLECTOR_PREFIX
from vpsmon.collector.config import SETTINGS as COLLECTOR_SETTINGS
from vpsmon.config import reference_markdown
from vpsmon.exporter.config import ENV_PREFIX as EXPORTER_PREFIX
from vpsmon.exporter.config import settings as exporter_settings


def tables() -> str:
    return (
        reference_markdown("collector.yml", COLLECTOR_SETTINGS, COLLECTOR_PREFIX)
        + "\n"
        + reference_markdown("exporter.yml", exporter_settings(), EXPORTER_PREFIX)
    )


if __name__ == "__main__":
    print(tables(), end="")
