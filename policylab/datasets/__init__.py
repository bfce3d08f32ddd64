"""Making offline datasets with policylab's own code (``python -m policylab.datasets --help``)."""
