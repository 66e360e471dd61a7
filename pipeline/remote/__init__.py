"""Stages on several hosts with no shared disk: a DVC remote moves stage outputs between the
workers' checkouts, and each DAG run carries what identifies its inputs from task to task
(docs/airflow.md, *Workers on several hosts*)."""
