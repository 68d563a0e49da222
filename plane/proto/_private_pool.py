"""The descriptor pool our generated modules register in (see generate.py for why)."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
