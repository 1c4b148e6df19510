"""Analysis of run records: one tidy table, pure statistics, tables, figures and the report.

Never imports torch (nor transformers/peft): `kdlora report` must run anywhere, fast.
Modules: table (records -> tidy table), stats (pure statistics), tables (computed tables),
rules (recommendations and limitations), plots, latex, report (orchestration and markdown).
"""
