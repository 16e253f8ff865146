"""The restful-etl command line: the typer app, its Prefect REST client, watch, records and output."""
