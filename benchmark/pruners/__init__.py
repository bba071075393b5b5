"""Pruning methods. Each method is a class named by a ``conf/pruner/<name>.yaml`` ``_target_``."""
