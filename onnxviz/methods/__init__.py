"""Attribution methods: one class per method, a shared interface, results as data."""
