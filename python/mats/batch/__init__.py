"""The day's bookends as plain polars functions: start of day (:mod:`mats.batch.sod`) and end of
day (:mod:`mats.batch.eod`), tested without Airflow.

The Airflow DAGs in ``dags/`` stay thin: each task calls one function here with file paths and
passes paths on. Inputs are CSV or Parquet files whose columns are documented as
:class:`mats.batch.tables.Table` schemas; every input is validated with Great Expectations
(:mod:`mats.batch.quality`) before it is used, and a critical failure stops the run with a
:class:`mats.batch.problems.Problem` naming the file, the column, the rows and what was wrong.
See ``docs/batch.md``.
"""

from mats.batch.problems import BatchInputError, Problem, Severity

__all__ = ["BatchInputError", "Problem", "Severity"]
