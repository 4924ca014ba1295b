"""Great Expectations glue: run a list of :class:`Rule` on a polars frame, get :class:`Problem`.

Great Expectations 1.x has no polars data source, so each frame is validated as
``frame.to_pandas()`` in an *ephemeral* data context (nothing written but the Data Docs, when
asked for). A rule is an expectation class name, its arguments, a severity and the sentence a
user reads when it fails; the expectation carries that sentence in its ``meta`` so the Data Docs
show it too. Row numbers come back through the pandas index, which is the frame's ``_row``
column (CSV line or Parquet row number).

Great Expectations is imported on first use (it takes seconds), with its usage statistics
switched off and its import-time warnings silenced.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mats.batch.problems import Problem, Severity
from mats.batch.tables import ROW

__all__ = ["Quality", "Rule"]


@dataclass(frozen=True)
class Rule:
    """One expectation: ``expectation`` is a class of ``great_expectations.expectations``.

    ``message`` is what the user reads when it fails (the offending values are appended).
    """

    expectation: str
    kwargs: dict[str, Any]
    message: str
    severity: Severity = Severity.CRITICAL

    @property
    def column(self) -> str | None:
        col = self.kwargs.get("column")
        if isinstance(col, str):
            return col
        cols = self.kwargs.get("column_list")
        return ", ".join(cols) if isinstance(cols, list) else None


def _gx() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
        import great_expectations.expectations  # the expectation classes
    return gx


def _show(value: Any) -> str:
    return repr(value.item() if hasattr(value, "item") else value)


@dataclass
class Quality:
    """One ephemeral Great Expectations context for one run; Data Docs built into ``docs_dir``.

    Examples
    --------
    >>> q = Quality()                                                  # doctest: +SKIP
    >>> q.validate("prices", "prices.csv", frame, [Rule(...)])         # doctest: +SKIP
    """

    docs_dir: Path | None = None
    # an EphemeralDataContext; typed Any since Great Expectations is imported lazily
    _context: Any = field(default=None, init=False, repr=False)
    _names: set[str] = field(default_factory=set, init=False, repr=False)

    def _ctx(self) -> Any:
        if self._context is None:
            gx = _gx()
            from great_expectations.data_context.types.base import ProgressBarsConfig

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ctx = gx.get_context(mode="ephemeral")
            ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
            # the ephemeral context comes with a site in a temporary folder: building the docs
            # would write there too and leave it behind
            for site in list(ctx.get_site_names()):
                ctx.delete_data_docs_site(site)
            if self.docs_dir is not None:
                ctx.add_data_docs_site(site_name="mats", site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                      "base_directory": str(self.docs_dir)},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                })
            ctx.data_sources.add_pandas("mats")
            self._context = ctx
        return self._context

    def validate(self, name: str, file: str, frame: pl.DataFrame, rules: list[Rule],
                 input_name: str | None = None) -> list[Problem]:
        """Run ``rules`` on ``frame``; one :class:`Problem` per failed rule.

        ``name`` names the suite and Data Docs page (made unique within the run); ``frame``
        may carry ``_row`` (row numbers used in the problems); other columns are validated.
        """
        gx = _gx()
        expectations = gx.expectations
        ctx = self._ctx()
        suite_name = name
        n = 1
        while suite_name in self._names:
            n += 1
            suite_name = f"{name}_{n}"
        self._names.add(suite_name)
        has_rows = ROW in frame.columns
        rows = frame[ROW].to_list() if has_rows else list(range(1, frame.height + 1))
        pdf = frame.drop(ROW, strict=False).to_pandas()
        pdf.index = rows
        source = ctx.data_sources.get("mats")
        asset = source.add_dataframe_asset(suite_name)
        batch = asset.add_batch_definition_whole_dataframe("whole")
        # the suite is built whole, then stored once (adding expectations to a stored suite
        # saves it again after each one)
        suite = ctx.suites.add(gx.ExpectationSuite(name=suite_name, expectations=[
            getattr(expectations, rule.expectation)(
                **rule.kwargs, severity=rule.severity.value, meta={"message": rule.message})
            for rule in rules]))
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=suite_name, data=batch, suite=suite))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # SUMMARY: counts and the first 20 offending values and row numbers, whatever the
            # size of the frame
            result = vd.run(batch_parameters={"dataframe": pdf},
                            result_format={"result_format": "SUMMARY"})
        problems: list[Problem] = []
        for rule, res in zip(rules, _in_order(rules, result.results), strict=True):
            if res is None:
                # a result that cannot be matched to its rule must not pass in silence
                problems.append(Problem(
                    input=input_name or name, file=file, severity=Severity.CRITICAL,
                    check=rule.expectation, column=rule.column,
                    message=f"{rule.message}: the check could not be evaluated"))
                continue
            if res.success:
                continue
            detail = res.result or {}
            index = [int(i) for i in detail.get("partial_unexpected_index_list") or []
                     if has_rows and (isinstance(i, int) or hasattr(i, "__index__"))]
            count = int(detail.get("unexpected_count") or len(index))
            msg = rule.message
            values = detail.get("partial_unexpected_list") or []
            if values and rule.expectation not in ("ExpectCompoundColumnsToBeUnique",
                                                   "ExpectColumnValuesToNotBeNull"):
                uniq: list[str] = []
                for v in values:
                    shown = _show(v)
                    if shown not in uniq:
                        uniq.append(shown)
                msg += f" (found {', '.join(uniq[:5])}{', ...' if len(uniq) > 5 else ''})"
            if res.exception_info and res.exception_info.get("raised_exception"):
                msg += f" (the check could not run: {res.exception_info.get('exception_message')})"
            problems.append(Problem(
                input=input_name or name, file=file, severity=rule.severity,
                check=rule.expectation, column=rule.column, rows=index[:20],
                row_count=count if index else 0, message=msg))
        return problems

    def build_docs(self) -> Path | None:
        """Write the Data Docs of every validation so far; the site's ``index.html``."""
        if self.docs_dir is None or self._context is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._context.build_data_docs()
        return self.docs_dir / "index.html"


def _in_order(rules: list[Rule], results: list[Any]) -> list[Any]:
    """Results matched back to rules (by expectation type and arguments, in order)."""
    out: list[Any] = []
    used: set[int] = set()
    for rule in rules:
        match = None
        for i, res in enumerate(results):
            cfg = res.expectation_config
            if i in used or cfg.type != _snake(rule.expectation):
                continue
            # False and None are defaults Great Expectations may leave out of its copy
            if all(cfg.kwargs.get(k) == v for k, v in rule.kwargs.items()
                   if v is not None and v is not False):
                match = res
                used.add(i)
                break
        out.append(match)
    return out


def _snake(name: str) -> str:
    out = ""
    for ch in name:
        out += ("_" + ch.lower()) if ch.isupper() and out else ch.lower()
    return out
