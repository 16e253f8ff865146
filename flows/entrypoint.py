"""The generic entrypoint: `prefect_restful_etl.flows.entrypoint.<batch type>` is the flow of that batch type,
wherever the catalog finds it (the batch types folder, an entry point, this package), so that a user's
prefect.yaml needs no Python of theirs:

```yaml
deployments:
  - name: acme-orders
    entrypoint: prefect_restful_etl.flows.entrypoint.acme_orders   # batch type `acme-orders`
```
The attribute is the batch type's name with `_` for `-` (a Python identifier); the name itself works too.
"""

from __future__ import annotations

from typing import Any

from prefect import Flow

from prefect_restful_etl.flows.catalog import find
from prefect_restful_etl.tasks.engine.exceptions import ConfigError


def __getattr__(attribute: str) -> Flow[..., Any]:
    if attribute.startswith("_"):  # Python's own probes (`__path__`, `__wrapped__` ...): no batch type
        raise AttributeError(attribute)
    try:
        return find(attribute.replace("_", "-")).flow
    except ConfigError as ex:
        raise AttributeError(f"{attribute}: {ex}") from None
