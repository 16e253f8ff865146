"""The engine: plain async Python (HTTP, paging, auth, stage, screens, SCD, tables); never imports Prefect."""
