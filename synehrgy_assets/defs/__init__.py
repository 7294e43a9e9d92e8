"""Asset definitions, one module per pipeline stage. They only wire the pure core."""
