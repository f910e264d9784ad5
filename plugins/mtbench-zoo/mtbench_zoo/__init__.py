"""mtbench's first-party plugins. Each module is one entry point; none registers anything on import."""
