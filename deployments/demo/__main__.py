"""`python -m prefect_restful_etl.deployments.demo`: run the demo."""

from prefect_restful_etl.deployments.demo.run import main

main()
