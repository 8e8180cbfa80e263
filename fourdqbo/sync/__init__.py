"""The sync: mapping a quote to an invoice draft and planning (pure), then execution and report.

`mapping` and `planning` are the functional core: data in, data out, no I/O. Execution, the
state store and the report are the imperative shell around them.
"""
