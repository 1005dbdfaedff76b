"""The spine shared by all stages: configs, tasks, keys, cache format, publishing, CLI.

Light imports only: nothing here imports torch, transformers, mindspore or mindquantum.
"""

__version__ = "0.1.0"
