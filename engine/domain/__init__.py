"""What every layer shares: money, rule matching, naming conventions, typed
value reads, Global Settings, the runtime error protocol (see README.md)."""
