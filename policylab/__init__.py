"""policylab: policy optimization from offline data and preferences, as Lightning modules."""

__version__ = "0.1.0"
