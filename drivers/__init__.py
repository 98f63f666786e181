"""Device drivers: the only code that knows a wire protocol."""
