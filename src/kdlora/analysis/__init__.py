"""Analysis of run records: one tidy table, pure statistics, tables, figures and the report.

Never imports torch (nor transformers/peft): `kdlora report` must run anywhere, fast.
Modules: tidy (records -> the tidy table), model (Settings, Analysis), stats (pure statistics),
tables (computed tables), rules (recommendations and limitations), plots, latex, markdown,
report (orchestration).
"""
